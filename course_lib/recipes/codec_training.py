"""Train the learned codec: ``python -m course_lib train [options]``.

One command for a laptop CPU, a Colab GPU or several GPUs::

    python -m course_lib train --run-dir runs/msh                      # CPU / one GPU
    torchrun --nproc_per_node=4 -m course_lib train --run-dir runs/msh  # four GPUs (DDP)
    python -m course_lib train --run-dir runs/gpu --preset gpu         # ten minutes, one GPU

(Option names avoid prefixes of torchrun's own options, which its parser would take.)
It trains a variable-rate mean–scale hyperprior (one model, one rate per λ in ``--lambdas``)
on random patches of the course training set (CID22 + BSDS500) with the course's one recipe
(:func:`course_lib.recipes.train_on_patches`, over :func:`course_lib.train.train`): device
auto-detection, mixed precision and larger
batches on CUDA (``--amp`` also on CPUs with native bfloat16), a step-decay learning-rate
schedule, a progress bar, a CSV log and a checkpoint every ``--checkpoint-every`` steps.
Running the same command again resumes exactly where it stopped; ``--steps`` may be raised
to continue a finished run.
``python -m course_lib export --run-dir runs/msh --out weights/codec/mean-scale-vr.pt`` writes
the weights file the codec ships with.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from .. import weights
from ..codecs.learned import save_weights
from ..models import LAMBDAS, CheckerboardMeanScale, RateDistortionLoss, build_model
from ..train import mixed_precision_dtype, pick_device, time_budget, unwrap
from . import train_on_patches

DEFAULT_LAMBDAS = (LAMBDAS[0], LAMBDAS[2], LAMBDAS[4], LAMBDAS[6])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m course_lib train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, type=Path, help="folder for checkpoint and log")
    p.add_argument("--architecture", default="mean-scale",
                   choices=["hyperprior", "mean-scale", "checkerboard"],
                   help="checkerboard: the mean-scale hyperprior with a checkerboard context "
                        "model; --init may then name mean-scale weights of the same size")
    p.add_argument("--channels", type=int, default=128, help="channels N of the transforms")
    p.add_argument("--latent-channels", type=int, default=192, help="channels M of y")
    p.add_argument("--lambdas", default=",".join(map(str, DEFAULT_LAMBDAS)),
                   help="comma-separated λ, one rate point each (lowest rate first)")
    p.add_argument("--steps", type=int, default=300_000)
    p.add_argument("--batch-size", type=int, default=None,
                   help="per process; default 16 on CUDA, 8 otherwise")
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--decoder-quantization", default="ste", choices=["noise", "ste"])
    p.add_argument("--workers", type=int, default=2, help="data loader processes")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: detect)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA; --amp on a CPU with native "
                        "bfloat16, AVX512-BF16 or AMX, about doubles the speed there)")
    p.add_argument("--init", type=Path, default=None,
                   help="start a new run from these weights ('shipped': the course's "
                        "mean-scale weights)")
    p.add_argument("--downscale", type=float, nargs=2, default=None,
                   metavar=("PROBABILITY", "SMALLEST"),
                   help="crop this share of the patches from copies of the images shrunk by a "
                        "random factor down to SMALLEST (e.g. 0.5 0.5)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop (with a checkpoint) after this many minutes of this launch")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a prepared set of options (those given explicitly win): 'gpu' trains "
                        "the checkerboard model from the shipped weights on one large GPU in "
                        "about ten minutes (see PRESETS)")
    p.add_argument("--images", type=int, default=None,
                   help="use only the first N training images (quick tests)")
    return p


# Prepared option sets: ``--preset NAME`` sets these unless the command line gives them.
PRESETS = {
    # One large GPU (a 2024 data-centre GPU: H100/H200 class), about ten minutes: the context
    # model grown from the shipped mean-scale weights, 256-pixel crops (half of them from
    # shrunk copies), 16 per batch, bfloat16, 8,000 steps with the learning rate x0.3 at 80 %
    # and 95 % (6,400 and 7,600). --minutes stops it at ten minutes whatever the GPU's speed.
    "gpu": {"architecture": "checkerboard", "channels": 96, "latent_channels": 160,
            "init": Path("shipped"), "patch_size": 256,
            "batch_size": 16, "lr": 1e-4, "steps": 8000, "amp": True, "workers": 8,
            "downscale": [0.5, 0.5], "checkpoint_every": 1000, "minutes": 10.0},
}


def parse_arguments(argv=None) -> argparse.Namespace:
    """The command line's options, a ``--preset``'s values filling in those not given."""
    p = parser()
    preset = p.parse_known_args(argv)[0].preset
    if preset is not None:
        p.set_defaults(**PRESETS[preset])
    return p.parse_args(argv)


def _time_budget(minutes: float | None):
    """:func:`course_lib.train.time_budget`, with the command line's message."""
    if minutes is not None and minutes <= 0:
        raise SystemExit("error: --minutes must be positive")
    return time_budget(minutes)


def _config(args) -> dict:
    lambdas = [float(value) for value in str(args.lambdas).split(",") if value]
    if not lambdas or any(value <= 0 for value in lambdas):
        raise SystemExit("error: --lambdas needs positive numbers, e.g. 0.0018,0.0067")
    return {"architecture": args.architecture, "n": args.channels,
            "m": args.latent_channels,
            "num_rates": len(lambdas), "lambdas": lambdas}


def _init_distributed(device_arg):
    """Set up DDP when started by torchrun; returns (device, rank, world size)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available() and device_arg in (None, "cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    device = pick_device(device_arg)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return device, rank, world_size


def main(argv=None) -> None:
    args = parse_arguments(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = _config(args)
    device, rank, world_size = _init_distributed(args.device)
    if args.amp:
        try:
            mixed_precision_dtype(device)  # the trainer's own check, before any data loads
        except ValueError as error:
            raise SystemExit(f"error: --amp: {error}") from None
    batch_size = args.batch_size or (16 if device.type == "cuda" else 8)
    run = args.run_dir
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        saved = run / "config.json"
        if saved.is_file() and json.loads(saved.read_text()) != config:
            raise SystemExit(f"error: {run} holds a run with another configuration "
                             f"({saved}); choose another --run-dir")
        saved.write_text(json.dumps(config, indent=2) + "\n")

    torch.manual_seed(args.seed)  # identical initial weights on every rank
    model = build_model(config)
    if args.init == Path("shipped"):  # the course's shipped mean-scale weights, verified
        args.init = weights.path("codec/mean-scale-vr.pt")
    if args.init is not None and not (run / "checkpoint.pt").is_file():
        initial = torch.load(args.init, map_location="cpu", weights_only=True)
        grown = dict(initial["config"], architecture="checkerboard")
        if initial["config"] == config:
            model.load_state_dict(initial["state_dict"])
        elif config["architecture"] == "checkerboard" and grown == config:
            # a context model on a trained mean-scale hyperprior: it starts where that was
            model = CheckerboardMeanScale.from_mean_scale(
                initial["state_dict"], config["n"], config["m"], config["num_rates"])
        else:
            raise SystemExit(f"error: {args.init} has another configuration: "
                             f"{initial['config']}")
    model.decoder_quantization = args.decoder_quantization
    lambdas = torch.tensor(config["lambdas"])
    criterion = RateDistortionLoss()

    # channels-last convolutions are faster on CPUs (oneDNN) and on GPU tensor cores
    model.to(memory_format=torch.channels_last)

    def loss_fn(net, batch):
        batch = batch.contiguous(memory_format=torch.channels_last)
        rates = torch.randint(len(lambdas), (batch.shape[0],))  # one rate per image
        output = net(batch, rates.to(batch.device) if len(lambdas) > 1 else None)
        losses = criterion(output, batch, lambdas[rates].to(batch.device))
        losses["aux_loss"] = unwrap(net).aux_loss()
        return losses

    result = train_on_patches(
        model, loss_fn, args.steps, patch_size=args.patch_size, batch_size=batch_size,
        lr=args.lr, milestones=(0.8, 0.95), gamma=0.3, aux_lr=1e-3, num_images=args.images,
        downscale=tuple(args.downscale) if args.downscale else None, workers=args.workers,
        distributed=world_size > 1, seed=args.seed, device=device, amp=args.amp,
        clip_grad_norm=1.0, checkpoint_path=run / "checkpoint.pt",
        checkpoint_every=args.checkpoint_every, log_csv=run / "log.csv", log_every=50,
        callback=_time_budget(args.minutes))
    if rank == 0:
        print(f"stopped at step {result.step} after {result.seconds / 3600:.2f} h"
              + (" (interrupted; run the same command to resume)" if result.interrupted
                 else ""))
    if dist.is_initialized():
        dist.destroy_process_group()


def export(argv=None) -> None:
    """``python -m course_lib export --run-dir RUN --out FILE``: checkpoint -> weights file."""
    p = argparse.ArgumentParser(prog="python -m course_lib export")
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    config = json.loads((args.run_dir / "config.json").read_text())
    checkpoint = torch.load(args.run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    model = build_model(config)
    model.load_state_dict(checkpoint["model"])
    digest = save_weights(model, config, args.out)
    print(f"{digest}  {args.out.name}  (step {checkpoint.get('step', '?')})")
