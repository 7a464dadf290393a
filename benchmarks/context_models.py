"""Which context model for the course's codec: checkerboard or channel-conditional slices?

    python benchmarks/context_models.py [--weights FILE] [--steps 1500] [--batch-size 8]
        [--patch-size 256] [--slices 5] [--lr 3e-4] [--images 24] [--threads 1]
        [--continued-only] [--save-continued FILE] [--out benchmarks/results/context_models.txt]

A measured comparison on one set of trained transforms (default: the shipped
``checkerboard-vr``), frozen. Every context model predicts the same latents ``y`` from the same
hyperprior, so the only thing that differs is how much of y's own structure each one turns
into fewer bits. The rows:

* **hyperprior**: no context. Every latent gets the anchors' parameters of the shipped model
  (``p0``: the hyperprior's means and scales, as the checkerboard's first pass has them).
* **checkerboard, shipped**: the shipped model's two passes, trained jointly with its
  transforms.
* **checkerboard, continued**: the shipped context model (masked convolution and entropy
  parameters) trained further here, the transforms frozen.
* **checkerboard, new** (He et al. 2021): a fresh masked 5 x 5 convolution and 1 x 1 network
  that corrects ``p0`` at the non-anchors, its last layer zero at the start.
* **channel-conditional, new** (Minnen & Singh 2020): y cut into ``--slices`` slices of
  channels, coded one after the other; slice k's means and scales are ``p0`` corrected by a
  network (three 3 x 3 convolutions) that sees ``p0`` and the decoded slices before it. Slice 0
  is ``p0`` alone, as the checkerboard's anchors are. Without Minnen & Singh's latent residual
  prediction (which would change what the synthesis transform receives).

``--continued-only`` trains and measures the shipped context model alone (rows hyperprior,
shipped and continued): with ``--save-continued FILE`` the way to give a shipped model's
context more training without touching its transforms (``weights/codec/README.md``).

The two new models start exactly at the hyperprior row (checked) and are trained for the same
steps on the same batches with the same optimiser: the rate of y with uniform noise, the
transforms, and so the distortion, fixed. Each step draws ``--batch-size`` crops of the course
training set (half from shrunk copies, as the codec's training), each at a random rate setting.
Evaluated on Kodak at every rate setting: latents rounded around their predicted means, exactly
as the codec rounds them, in the order the decoder would have them; bits from the model's
likelihoods (the shipped codec's real files are within 1 % of these); PSNR of the decoded
image on 8-bit RGB. BD-rates over the four settings; the decoder's sequential passes and the
context networks' size say what each costs.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from course_lib import bench, datasets, metrics
from course_lib.codecs import learned
from course_lib.entropy_models import quantize
from course_lib.images import pad_to_multiple, to_tensor
from course_lib.models import CheckerboardMeanScale, MaskedConv2d, anchor_mask, rate_bits


def _ste(values, offset):
    return quantize(values, "ste", offset)


def _round(values, offset):
    return quantize(values, "round", offset)


class Hyperprior(nn.Module):
    """No context: every latent gets ``p0``, the hyperprior's means and scales."""

    passes = 1
    reads = "p0"  # what forward's first argument is: p0, or h_s's output ("hyper")

    def forward(self, p0: torch.Tensor, y: torch.Tensor, quant):
        return p0.chunk(2, dim=1)


class CheckerboardContext(nn.Module):
    """He et al.'s checkerboard: the non-anchors' parameters are ``p0`` plus a correction from
    ``p0`` and the decoded anchors around them (masked 5 x 5 convolution); anchors keep ``p0``.
    """

    passes = 2
    reads = "p0"

    def __init__(self, m: int):
        super().__init__()
        self.context = MaskedConv2d(m, 2 * m, 5)
        self.net = nn.Sequential(nn.Conv2d(4 * m, 3 * m, 1), nn.LeakyReLU(inplace=True),
                                 nn.Conv2d(3 * m, 2 * m, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, p0: torch.Tensor, y: torch.Tensor, quant):
        scales0, means0 = p0.chunk(2, dim=1)
        anchors = anchor_mask(*y.shape[-2:]).to(y.device)
        y_anchors = quant(y, means0) * anchors
        corrected = p0 + self.net(torch.cat([p0, self.context(y_anchors)], dim=1))
        return torch.where(anchors, p0, corrected).chunk(2, dim=1)


class ChannelContext(nn.Module):
    """Minnen & Singh's channel-conditional model: slice k's parameters are ``p0``'s plus a
    correction from ``p0`` and the decoded slices 0..k-1; slice 0 keeps ``p0``."""

    reads = "p0"

    def __init__(self, m: int, slices: int, widths=(160, 96)):
        super().__init__()
        if m % slices:
            raise ValueError(f"{m} channels do not cut into {slices} equal slices")
        self.m, self.slices, self.size = m, slices, m // slices
        self.passes = slices
        nets = []
        for k in range(1, slices):
            net = nn.Sequential(
                nn.Conv2d(2 * m + k * self.size, widths[0], 3, padding=1),
                nn.LeakyReLU(inplace=True),
                nn.Conv2d(widths[0], widths[1], 3, padding=1), nn.LeakyReLU(inplace=True),
                nn.Conv2d(widths[1], 2 * self.size, 3, padding=1))
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)
            nets.append(net)
        self.nets = nn.ModuleList(nets)

    def forward(self, p0: torch.Tensor, y: torch.Tensor, quant):
        scales0, means0 = p0.chunk(2, dim=1)
        scales, means, decoded = [], [], []
        for k in range(self.slices):
            part = slice(k * self.size, (k + 1) * self.size)
            scale, mean = scales0[:, part], means0[:, part]
            if k:
                correction = self.nets[k - 1](torch.cat([p0, *decoded], dim=1))
                scale = scale + correction[:, :self.size]
                mean = mean + correction[:, self.size:]
            decoded.append(quant(y[:, part], mean))
            scales.append(scale)
            means.append(mean)
        return torch.cat(scales, dim=1), torch.cat(means, dim=1)


class ShippedContext(nn.Module):
    """The shipped model's own two passes (its context_prediction and entropy_parameters),
    on ``h_s``'s output rather than ``p0``."""

    passes = 2
    reads = "hyper"

    def __init__(self, model: CheckerboardMeanScale):
        super().__init__()
        self.model = model

    def forward(self, hyper: torch.Tensor, y: torch.Tensor, quant):
        _, scales, means, _ = self.model._two_passes(hyper, y, quant)
        return scales, means


def context_parameter_count(module: nn.Module) -> int:
    if isinstance(module, ShippedContext):
        module = nn.ModuleList([module.model.context_prediction,
                                module.model.entropy_parameters])
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def hyper_and_p0(model: CheckerboardMeanScale, x: torch.Tensor, rates):
    """``(y, z_hat, sources)``: the frozen part every context model shares; ``sources`` holds
    the inputs a variant may read (its ``reads``): ``h_s``'s output and ``p0``."""
    y, z = model.analysis(x, rates)
    z_hat = quantize(z, "round", model.entropy_bottleneck.medians.view(1, -1, 1, 1))
    hyper = model.h_s(z_hat)
    p0 = torch.cat(model._parameters_with_context(hyper, None), dim=1)
    return y, z_hat, {"hyper": hyper, "p0": p0}


def train_contexts(model, variants: dict, args) -> list[dict]:
    """Adam on each variant's rate of y (noisy latents, shared noise), the same batches."""
    trainable = {name: v for name, v in variants.items()
                 if any(p.requires_grad for p in v.parameters())}
    optimizers = {name: torch.optim.Adam([p for p in v.parameters() if p.requires_grad],
                                         lr=args.lr) for name, v in trainable.items()}
    schedulers = {name: torch.optim.lr_scheduler.CosineAnnealingLR(o, args.steps,
                                                                   eta_min=args.lr / 30)
                  for name, o in optimizers.items()}
    dataset = datasets.PatchDataset(datasets.training_paths(), args.patch_size, train=True,
                                    downscale=(0.5, 0.5))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         drop_last=True,
                                         generator=torch.Generator().manual_seed(args.seed))
    num_rates = model.num_rates
    history, sums, count, step = [], dict.fromkeys(trainable, 0.0), 0, 0
    start = time.perf_counter()
    while step < args.steps:
        for x in loader:
            rates = torch.randint(num_rates, (x.shape[0],))
            y, _, sources = hyper_and_p0(model, x, rates)
            noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
            pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
            for name, variant in trainable.items():
                scales, means = variant(sources[variant.reads], y, _ste)
                likelihoods = model.gaussian_conditional.likelihood(noisy, scales, means)
                loss = rate_bits({"y": likelihoods}).sum() / pixels
                optimizers[name].zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(variant.parameters(), 1.0)
                optimizers[name].step()
                schedulers[name].step()
                sums[name] += loss.item()
            step, count = step + 1, count + 1
            if step % 50 == 0 or step == args.steps:
                row = {"step": step, "seconds": time.perf_counter() - start,
                       **{name: total / count for name, total in sums.items()}}
                history.append(row)
                print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in row.items()), file=sys.stderr, flush=True)
                sums, count = dict.fromkeys(trainable, 0.0), 0
            if step == args.steps:
                break
    return history


@torch.no_grad()
def evaluate(model, variants: dict, images: int) -> dict:
    """Per variant and rate setting, mean over Kodak images: bpp (y and z estimated from the
    likelihoods of the rounded latents) and PSNR (8-bit RGB)."""
    results = {name: {"bpp": np.zeros((images, model.num_rates)),
                      "psnr": np.zeros((images, model.num_rates))} for name in variants}
    for index in range(images):
        image = datasets.load_kodak(index + 1)
        height, width = image.shape[:2]
        original = to_tensor(image)
        x, _ = pad_to_multiple(original, model.multiple)
        for rate in range(model.num_rates):
            y, z_hat, sources = hyper_and_p0(model, x, rate)
            z_likelihoods = model.entropy_bottleneck.likelihood(z_hat)
            _, inverse_gain = model.gains(rate)
            for name, variant in variants.items():
                scales, means = variant(sources[variant.reads], y, _round)
                y_hat = _round(y, means)
                bits = rate_bits({"y": model.gaussian_conditional.likelihood(y_hat, scales,
                                                                             means),
                                  "z": z_likelihoods})
                x_hat = model.g_s(y_hat * inverse_gain)[..., :height, :width]
                results[name]["bpp"][index, rate] = float(bits) / (height * width)
                results[name]["psnr"][index, rate] = float(metrics.psnr(original, x_hat))
        print(f"  evaluated kodim{index + 1:02d}", file=sys.stderr, flush=True)
    return {name: {key: values.mean(axis=0) for key, values in r.items()}
            for name, r in results.items()}


def report(args, loaded, variants, history, curves, seconds) -> str:
    lines = [f"Context models on frozen transforms: {loaded.name} (sha256 {loaded.sha256[:16]}…),"
             f" Kodak {args.images} images, estimated rates of the rounded latents",
             f"training: {args.steps} steps of {args.batch_size} crops of {args.patch_size} px "
             f"(half from shrunk copies), Adam lr {args.lr:g} cosine to {args.lr / 30:.2g}, "
             f"seed {args.seed}; {torch.get_num_threads()} thread(s), {platform.machine()}; "
             f"whole run {seconds:.0f} s", ""]
    names = list(variants)
    lines.append(f"{'model':<28} {'passes':>6} {'params':>9}   " + "   ".join(
        f"rate {r}: bpp  PSNR" for r in range(len(curves[names[0]]["bpp"]))))
    for name in names:
        variant = variants[name]
        passes, params = variant.passes, context_parameter_count(variant)
        cells = "   ".join(f"{b:12.4f} {p:5.2f}" for b, p in zip(curves[name]["bpp"],
                                                                   curves[name]["psnr"],
                                                                   strict=True))
        lines.append(f"{name:<28} {passes:>6} {params:>9,}   {cells}")
    lines += ["", "BD-rate in % (rows against columns; negative: fewer bits at equal PSNR)",
              f"{'':<28} " + " ".join(f"{n[:14]:>15}" for n in names)]
    for test in names:
        row = []
        for reference in names:
            row.append(bench.bd_rate(curves[reference]["bpp"], curves[reference]["psnr"],
                                     curves[test]["bpp"], curves[test]["psnr"]))
        lines.append(f"{test:<28} " + " ".join(f"{value:15.2f}" for value in row))
    lines += ["", "training loss (bits of y per pixel, noisy latents), every 500 steps"]
    trained = [k for k in history[0] if k not in ("step", "seconds")] if history else []
    lines.append(f"{'step':>6} {'s':>7} " + " ".join(f"{n[:24]:>26}" for n in trained))
    for row in history:
        if row["step"] % 500 == 0 or row is history[-1] or row is history[0]:
            lines.append(f"{row['step']:>6} {row['seconds']:7.0f} "
                         + " ".join(f"{row[n]:26.4f}" for n in trained))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None,
                        help="a checkerboard weights file (default: the shipped one)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--images", type=int, default=24, choices=range(2, 25),
                        metavar="2..24")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--continued-only", action="store_true",
                        help="only the shipped context model, trained further")
    parser.add_argument("--save-continued", type=Path, default=None,
                        help="write the shipped model with its continued context model here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps < 0 or args.batch_size < 1:
        parser.error("--steps must be >= 0 and --batch-size >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    loaded = (learned.load_weights(args.weights) if args.weights
              else learned.load_shipped("checkerboard-vr"))
    model = loaded.model
    if not isinstance(model, CheckerboardMeanScale):
        parser.error(f"{loaded.name} is not a checkerboard model")
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    continued = copy.deepcopy(model)
    for module in (continued.context_prediction, continued.entropy_parameters):
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    m = model.m
    variants = {"hyperprior": Hyperprior(),
                "checkerboard, shipped": ShippedContext(model),
                "checkerboard, continued": ShippedContext(continued),
                "checkerboard, new": CheckerboardContext(m),
                f"channel ({args.slices} slices), new": ChannelContext(m, args.slices)}
    if args.continued_only:
        variants = {name: variants[name] for name in list(variants)[:3]}

    # the new models start exactly at the hyperprior
    x = torch.rand(1, 3, 128, 128)
    y, _, sources = hyper_and_p0(model, x, 0)
    p0 = sources["p0"]
    for name in [name for name in variants if name.endswith(", new")]:
        with torch.no_grad():
            scales, means = variants[name](p0, y, _round)
        if not torch.equal(torch.cat([scales, means], dim=1), p0):
            raise AssertionError(f"{name} does not start at the hyperprior")

    history = train_contexts(model, variants, args) if args.steps else []
    for variant in variants.values():
        variant.eval()
    curves = evaluate(model, variants, args.images)
    text = report(args, loaded, variants, history, curves, time.perf_counter() - started)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.save_continued:
        for parameter in continued.parameters():
            parameter.requires_grad_(False)
        digest = learned.save_weights(continued, loaded.config, args.save_continued)
        print(f"wrote {args.save_continued} (sha256 {digest})")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
