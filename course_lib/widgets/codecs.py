"""Demos for notebook 00: classical codecs at a chosen quality."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from ..codecs import classical
from . import live_output

LIVE_CODECS = ("jpeg", "jpeg444", "webp", "avif")


def _draw_quality(image: np.ndarray, window: tuple[slice, slice], codec: str, quality: int):
    result = classical.evaluate(image, codec, quality)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    axes[0].imshow(image[window])
    axes[0].set_title("original (crop)")
    label = classical.CODECS[codec].label
    axes[1].imshow(result.reconstruction[window])
    axes[1].set_title(f"{label} q={quality}: {result.num_bytes / 1024:.1f} KiB, "
                      f"{result.bpp:.3f} bpp\nPSNR {result.psnr:.2f} dB, "
                      f"MS-SSIM {result.ms_ssim:.4f}")
    for axis in axes:
        axis.axis("off")
    fig.tight_layout()
    plt.show()
    return result


def quality_explorer(image: np.ndarray, codec: str = "jpeg", quality: int = 10,
                     window: tuple[slice, slice] | None = None):
    """Slider over quality and a codec menu; shows the decoded crop, its bpp and PSNR.

    The whole image is coded (so bpp and PSNR are for the full image); ``window`` picks the
    crop that is displayed (default: a 192x256 crop around the centre). Draws the default
    state as a static figure, then returns the live panel.
    """
    if window is None:
        top, left = image.shape[0] // 2 - 96, image.shape[1] // 2 - 128
        window = (slice(top, top + 192), slice(left, left + 256))
    _draw_quality(image, window, codec, quality)
    codec_menu = widgets.Dropdown(
        options=[(classical.CODECS[name].label, name) for name in LIVE_CODECS],
        value=codec, description="codec")
    quality_slider = widgets.IntSlider(value=quality, min=1, max=100, step=1,
                                       description="quality", continuous_update=False)
    output = live_output(
        lambda codec, quality: _draw_quality(image, window, codec, quality),
        {"codec": codec_menu, "quality": quality_slider})
    return widgets.VBox([widgets.HBox([codec_menu, quality_slider]), output])
