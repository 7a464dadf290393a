"""Latent explorer: scale or zero one latent channel, round the latent to a few bits, and watch
the reconstruction and the file size change (notebook 03)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import metrics
from ..autoencoders import Autoencoder
from ..codecs import latent_files
from ..images import to_tensor
from . import live_output


def edit_latents(model: Autoencoder, x: torch.Tensor, channel: int, gain: float = 1.0,
                 bits: int | None = None):
    """Decode ``x (1, 3, H, W)`` after multiplying latent ``channel`` by ``gain``.

    With ``bits`` the edited latent is also rounded (:func:`~course_lib.codecs.latent_files.
    quantize_latents`) and stored with zlib. Returns ``(x_hat, y, psnr_db, bpp)``; ``y`` is
    the edited latent ``(1, C, h, w)`` and ``bpp`` is ``None`` without rounding.
    """
    if not 0 <= channel < model.latent_channels:
        raise ValueError(f"channel must be in 0..{model.latent_channels - 1}, got {channel}")
    height, width = x.shape[-2:]
    with torch.no_grad():
        y = model.encode(x)
        y[:, channel] *= gain
        bpp = None
        if bits is not None:
            quantized = latent_files.quantize_latents(y[0], bits, image_size=(height, width))
            bpp = metrics.bpp(len(latent_files.pack_latents(quantized, "zlib")), height, width)
            y = latent_files.dequantize_latents(quantized)
        x_hat = model.decode(y, height, width)
    return x_hat, y, metrics.psnr(x, x_hat).item(), bpp


def _draw(model, x, channel, gain, bits):
    x_hat, _, psnr, bpp = edit_latents(model, x, channel, gain, bits)
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
    axes[0].imshow(x[0].permute(1, 2, 0).numpy())
    axes[0].set_title("original")
    axes[1].imshow(x_hat[0].permute(1, 2, 0).numpy())
    rate = "float latents (no file)" if bpp is None else f"{bits}-bit latents, zlib: {bpp:.3f} bpp"
    axes[1].set_title(f"reconstruction: {psnr:.2f} dB\n{rate}", fontsize=10)
    with torch.no_grad():
        plane = model.encode(x)[0, channel].numpy()   # before the gain, to see what it scales
    limit = max(float(np.abs(plane).max()), 1e-6)
    shown = axes[2].imshow(plane, cmap="RdBu_r", vmin=-limit, vmax=limit,
                           interpolation="nearest")
    axes[2].set_title(f"latent channel {channel} ({plane.shape[0]} x {plane.shape[1]}), "
                      f"sent x {gain:g}", fontsize=10)
    figure.colorbar(shown, ax=axes[2], fraction=0.035)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    plt.show()


def latent_explorer(model: Autoencoder, image: np.ndarray, channel: int = 0,
                    gain: float = 1.0, bits: int | None = 8):
    """Explore the latent of ``model`` on ``image`` (uint8 ``(H, W, 3)``; a crop of about
    256 x 256 keeps it responsive).

    Draws the default state as a static figure, then returns a panel: the channel to edit, its
    gain (0 switches it off, negative flips it) and the rounding (none, or 1..8 bits).
    """
    import ipywidgets as widgets

    x = to_tensor(image)
    _draw(model, x, channel, gain, bits)
    channel_slider = widgets.IntSlider(value=channel, min=0, max=model.latent_channels - 1,
                                       description="channel")
    gain_slider = widgets.FloatSlider(value=gain, min=-2.0, max=3.0, step=0.25,
                                      description="gain")
    bits_menu = widgets.Dropdown(options=[("no rounding", None)] + [(f"{b} bits", b)
                                                                   for b in range(1, 9)],
                                 value=bits, description="latents")

    def render(channel, gain, bits):
        _draw(model, x, channel, gain, bits)

    output = live_output(
        render, {"channel": channel_slider, "gain": gain_slider, "bits": bits_menu})
    return widgets.VBox([widgets.HBox([channel_slider, gain_slider, bits_menu]), output])
