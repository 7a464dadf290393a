"""Demos for notebook 07: where the bits of the learned codec go."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import metrics
from ..images import crop, to_tensor, to_uint8
from . import live_output
from .rate_distortion import ChannelCosts, channel_costs


@torch.no_grad()
def reconstruct_keeping(model, costs: ChannelCosts, keep: int, rate=None) -> np.ndarray:
    """Decode with only the ``keep`` most expensive channels of y (``costs`` from
    :func:`~course_lib.widgets.rate_distortion.channel_costs`); the others fall back to the
    hyperprior's prediction (their mean), which would cost almost no bits."""
    y_hat = torch.from_numpy(costs.means).float()[None]
    kept = torch.from_numpy(costs.order[:keep].copy())
    y_hat[:, kept] = costs.y_hat[:, kept]
    _, inverse_gain = model.gains(rate)
    x_hat = model.g_s(y_hat * inverse_gain).clamp(0, 1)
    return to_uint8(crop(x_hat, *costs.size))


def _draw_channels(model, image, costs, keep, rate):
    bits = costs.bits.sum(axis=(1, 2))[costs.order]
    pixels = image.shape[0] * image.shape[1]
    reconstruction = reconstruct_keeping(model, costs, keep, rate)
    kept_bpp = (bits[:keep].sum() + costs.z_bits) / pixels
    psnr = metrics.psnr(to_tensor(image), to_tensor(reconstruction)).item()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.2, 1]})
    axes[0].bar(np.arange(bits.size), bits / pixels, width=1.0, color="tab:blue")
    axes[0].bar(np.arange(keep), bits[:keep] / pixels, width=1.0, color="tab:orange",
                label=f"kept: {keep} channels")
    axes[0].set_xlabel("latent channel (sorted by cost)")
    axes[0].set_ylabel("bits per pixel")
    axes[0].set_title(f"y: {bits.sum() / pixels:.3f} bpp, z: {costs.z_bits / pixels:.4f} bpp")
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
    slider = widgets.IntSlider(value=keep, min=0, max=int(costs.order.size), step=1,
                               description="channels", continuous_update=False)
    output = live_output(
        lambda keep: _draw_channels(model, image, costs, keep, rate), {"keep": slider})
    return widgets.VBox([slider, output])
