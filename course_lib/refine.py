"""Encoding is inference: the encoder searches for better latents for each image.

The analysis transform ``g_a`` is trained to give good latents *on average* over the training
set, in one pass. For one particular image the encoder can do better: keep the decoder (and so
the file format) fixed and search for the latents ``y`` and ``z`` that minimise that image's
own rate–distortion cost ``bits / pixels + λ · 255² · MSE`` (Campos et al. 2019; Yang, Bamler &
Mandt 2020, "Improving inference for neural image compression").

The cost of *rounded* latents has no useful gradient, and the naive fixes fail: rounding with a
straight-through gradient drifts (each step moves latents that the rounding then ignores), and
noise in place of rounding optimises a cost the file never pays. Yang et al.'s **stochastic
Gumbel annealing** (SGA) rounds each latent down or up at random, with probabilities that
favour the nearer integer more and more as a temperature ``tau`` falls; the mixture is relaxed
(Gumbel-softmax), so the cost has a gradient, and at low temperature it becomes the cost of
rounding. :func:`refine_latents` runs Adam on ``y`` and ``z`` with SGA, evaluates the exact
cost of the rounded latents along the way, and returns the best latents it saw (never worse
than the transforms' own: they are the first candidate).

The search costs one pass of the synthesis transform forwards and backwards per step, so it is
an encoder's option (``effort`` in :func:`course_lib.codecs.learned.compress_image`); decoding
time does not change. The search uses random numbers from a fixed seed, so an image gives the
same file every time on one machine; the file always decodes the same everywhere (the decoder
does not depend on how the encoder found its latents).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .entropy_models import quantize
from .models import CompressionModel, rate_bits

# Steps of the search per effort level of the codec (0: the transforms' latents, no search).
EFFORT_STEPS = (0, 60, 250)


def sga_round(values: torch.Tensor, offset, tau: float, generator: torch.Generator | None = None
              ) -> torch.Tensor:
    """Stochastic Gumbel annealing: ``values`` rounded (on the grid shifted by ``offset``)
    down or up at random, relaxed so that gradients flow. The logits of "down" and "up" are
    ``-atanh(distance) / tau``: at high ``tau`` both roundings are likely, as ``tau`` falls the
    nearer one wins; Gumbel-softmax at temperature ``tau`` mixes the two."""
    shifted = values - offset
    floor = torch.floor(shifted).detach()
    fraction = shifted - floor
    eps = 1e-5
    logits = torch.stack([-torch.atanh(fraction.clamp(eps, 1 - eps)),
                          -torch.atanh((1 - fraction).clamp(eps, 1 - eps))], dim=-1) / tau
    uniform = torch.rand(logits.shape, generator=generator, dtype=logits.dtype)
    gumbel = -torch.log((-torch.log(uniform.clamp_min(1e-20))).clamp_min(1e-20))
    weights = F.softmax((logits + gumbel.to(logits.device)) / tau, dim=-1)
    return floor + weights[..., 1] + offset


def _round(values: torch.Tensor, offset) -> torch.Tensor:
    return quantize(values, "round", offset)


def rd_cost(model: CompressionModel, x: torch.Tensor, latents, rate, lmbda: float,
            relax=_round, size: tuple[int, int] | None = None) -> dict:
    """``{"loss", "bpp", "mse"}`` of latents ``(y, z)`` for image ``x`` (1, 3, H, W) in [0, 1]
    with the quantiser ``relax`` (default: rounding, what the file costs). ``size``: the image's
    own (height, width) inside a padded ``x``: the distortion counts those pixels only, the
    rate is spread over them."""
    height, width = size or x.shape[-2:]
    output = model.relaxed_terms(*latents, rate, relax)
    bpp = rate_bits(output["likelihoods"]).sum() / (height * width)
    mse = ((output["x_hat"] - x)[..., :height, :width] ** 2).mean()
    return {"loss": bpp + lmbda * 255**2 * mse, "bpp": bpp, "mse": mse}


def refine_latents(model: CompressionModel, x: torch.Tensor, rate, lmbda: float, steps: int,
                   *, lr: float = 0.01, tau_start: float = 0.5, tau_end: float = 0.05,
                   evaluate_every: int = 10, size: tuple[int, int] | None = None,
                   seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], list[dict]]:
    """Search latents ``(y, z)`` that lower the rounded rate–distortion cost of ``x``.

    ``x``: (1, 3, H, W) floats in [0, 1] (H, W multiples of the model's ``multiple``);
    ``rate``: the model's rate setting; ``lmbda``: the trade-off that rate was trained for.
    Adam (learning rate ``lr``) on the SGA-relaxed cost for ``steps`` steps, the temperature
    falling geometrically from ``tau_start`` to ``tau_end``; every ``evaluate_every`` steps the
    rounded cost is measured and the best latents kept. Returns ``((y, z), history)``, history
    a list of ``{"step", "loss", "bpp", "mse"}`` (rounded costs, the transforms' own first).
    """
    if steps < 0 or evaluate_every < 1:
        raise ValueError("steps must be >= 0 and evaluate_every >= 1")
    was_training = model.training
    model.eval()
    requires_grad = [p.requires_grad for p in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        with torch.no_grad():
            y, z = model.analysis(x, rate)
            best = rd_cost(model, x, (y, z), rate, lmbda, size=size)
        history = [{"step": 0, **{k: float(v) for k, v in best.items()}}]
        best_latents = (y.clone(), z.clone())
        if steps == 0:
            return best_latents, history
        y, z = y.clone().requires_grad_(True), z.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([y, z], lr=lr)
        generator = torch.Generator().manual_seed(seed)
        decay = math.log(tau_end / tau_start) / max(steps - 1, 1)
        for step in range(1, steps + 1):
            tau = tau_start * math.exp(decay * (step - 1))
            cost = rd_cost(model, x, (y, z), rate, lmbda, size=size,
                           relax=lambda v, o, t=tau: sga_round(v, o, t, generator))
            optimizer.zero_grad(set_to_none=True)
            cost["loss"].backward()
            optimizer.step()
            if step % evaluate_every == 0 or step == steps:
                with torch.no_grad():
                    rounded = rd_cost(model, x, (y, z), rate, lmbda, size=size)
                history.append({"step": step, **{k: float(v) for k, v in rounded.items()}})
                if rounded["loss"] < best["loss"]:
                    best, best_latents = rounded, (y.detach().clone(), z.detach().clone())
        return best_latents, history
    finally:
        for parameter, flag in zip(model.parameters(), requires_grad, strict=True):
            parameter.requires_grad_(flag)
        model.train(was_training)
