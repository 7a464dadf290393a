"""Demos for notebook 07: where the bits of the learned codec go."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import metrics
from ..images import crop, pad_to_multiple, to_tensor, to_uint8


@torch.no_grad()
def channel_costs(model, image: np.ndarray, rate=None) -> dict:
    """Per-channel bits of y for one image, and what the decoder needs to rebuild it.

    Returns ``{"bits": (M,) estimated bits per latent channel, "z_bits": bits of the side
    information, "y_hat", "means", "size"}`` with ``y_hat`` and ``means`` shaped
    ``(1, M, h, w)`` (``means`` is zero for the scale-only model).
    """
    height, width = image.shape[:2]
    x, _ = pad_to_multiple(to_tensor(image), model.multiple)
    y, z = model._analysis(x, rate)
    medians = model.entropy_bottleneck.medians.view(1, -1, 1, 1)
    z_hat = torch.round(z - medians) + medians
    _, z_likelihoods = model.entropy_bottleneck(z_hat, mode="round")
    scales, means = model._entropy_parameters(model.h_s(z_hat))
    means = torch.zeros_like(y) if means is None else means
    y_hat = torch.round(y - means) + means
    likelihoods = model.gaussian_conditional.likelihood(y_hat, scales, means)
    return {"bits": (-torch.log2(likelihoods)).sum(dim=(0, 2, 3)).numpy(),
            "z_bits": float(-torch.log2(z_likelihoods).sum()), "y_hat": y_hat,
            "means": means, "size": (height, width)}


@torch.no_grad()
def reconstruct_keeping(model, costs: dict, keep: int, rate=None) -> np.ndarray:
    """Decode with only the ``keep`` most expensive channels of y; the others fall back to the
    hyperprior's prediction (their mean), which would cost almost no bits."""
    order = np.argsort(costs["bits"])[::-1]
    y_hat = costs["means"].clone()
    kept = torch.from_numpy(order[:keep].copy())
    y_hat[:, kept] = costs["y_hat"][:, kept]
    _, inverse_gain = model._gains(rate)
    x_hat = model.g_s(y_hat * inverse_gain).clamp(0, 1)
    return to_uint8(crop(x_hat, *costs["size"]))


def _draw_channels(model, image, costs, keep, rate):
    bits = np.sort(costs["bits"])[::-1]
    pixels = image.shape[0] * image.shape[1]
    reconstruction = reconstruct_keeping(model, costs, keep, rate)
    kept_bpp = (bits[:keep].sum() + costs["z_bits"]) / pixels
    psnr = metrics.psnr(to_tensor(image), to_tensor(reconstruction)).item()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.2, 1]})
    axes[0].bar(np.arange(bits.size), bits / pixels, width=1.0, color="tab:blue")
    axes[0].bar(np.arange(keep), bits[:keep] / pixels, width=1.0, color="tab:orange",
                label=f"kept: {keep} channels")
    axes[0].set_xlabel("latent channel (sorted by cost)")
    axes[0].set_ylabel("bits per pixel")
    axes[0].set_title(f"y: {bits.sum() / pixels:.3f} bpp, z: {costs['z_bits'] / pixels:.4f} bpp")
    axes[0].legend()
    axes[1].imshow(reconstruction)
    axes[1].set_title(f"{keep} channels: ~{kept_bpp:.3f} bpp, PSNR {psnr:.2f} dB")
    axes[1].axis("off")
    fig.tight_layout()
    plt.show()


def channel_explorer(model, image: np.ndarray, rate=None, keep: int = 16):
    """Bar chart of bits per latent channel and the image decoded from the top ``keep``."""
    costs = channel_costs(model, image, rate)
    _draw_channels(model, image, costs, keep, rate)
    slider = widgets.IntSlider(value=keep, min=0, max=int(costs["bits"].size), step=1,
                               description="channels", continuous_update=False)
    output = widgets.interactive_output(
        lambda keep: _draw_channels(model, image, costs, keep, rate), {"keep": slider})
    return widgets.VBox([slider, output])
