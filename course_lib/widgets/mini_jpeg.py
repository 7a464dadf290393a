"""Mini-JPEG against Pillow's JPEG at the same quality, side by side (notebook 05)."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from .. import metrics
from ..codecs import classical, mini_jpeg
from ..images import to_tensor
from . import live_output

TRANSFORM_LABELS = {"dct": "mini-JPEG (DCT)", "haar": "mini-JPEG (Haar DWT)"}


def _coded(image: np.ndarray, data: bytes, decode) -> tuple[np.ndarray, str]:
    """The decoded image and a caption with its real size and PSNR."""
    decoded = decode(data)
    psnr = metrics.psnr(to_tensor(image), to_tensor(decoded)).item()
    rate = metrics.bpp(len(data), *image.shape[:2])
    return decoded, f"{len(data) / 1024:.1f} KiB, {rate:.3f} bpp, PSNR {psnr:.2f} dB"


def _draw_comparison(image: np.ndarray, window, quality: int, transform: str):
    ours = _coded(image, mini_jpeg.encode(image, quality, transform), mini_jpeg.decode)
    pillow = _coded(image, classical.encode(image, "jpeg", quality), classical.decode)
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 3.3))
    panels = [(image, "original (crop)"),
              (ours[0], f"{TRANSFORM_LABELS[transform]} q={quality}\n{ours[1]}"),
              (pillow[0], f"Pillow JPEG 4:2:0 q={quality}\n{pillow[1]}")]
    for axis, (picture, title) in zip(axes, panels, strict=True):
        axis.imshow(picture[window])
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    figure.tight_layout()
    plt.show()


def quality_comparison(image: np.ndarray, quality: int = 20, transform: str = "dct",
                       window: tuple[slice, slice] | None = None):
    """A quality slider (and transform menu) for mini-JPEG next to Pillow's JPEG.

    Both code the whole uint8 RGB ``image`` at the same quality; titles give the real file
    sizes and PSNRs, the panels show ``window`` (default: a 160x224 crop at the centre) so
    that the artefacts are visible. Draws the default state as a static figure, then returns
    the live panel.
    """
    if transform not in TRANSFORM_LABELS:
        raise ValueError(f"transform must be one of {tuple(TRANSFORM_LABELS)}, got {transform!r}")
    if window is None:
        top, left = image.shape[0] // 2 - 80, image.shape[1] // 2 - 112
        window = (slice(max(top, 0), top + 160), slice(max(left, 0), left + 224))
    _draw_comparison(image, window, quality, transform)
    quality_slider = widgets.IntSlider(value=quality, min=1, max=100, description="quality",
                                       continuous_update=False)
    transform_menu = widgets.Dropdown(
        options=[(label, name) for name, label in TRANSFORM_LABELS.items()], value=transform,
        description="transform")
    output = live_output(
        lambda quality, transform: _draw_comparison(image, window, quality, transform),
        {"quality": quality_slider, "transform": transform_menu})
    return widgets.VBox([widgets.HBox([quality_slider, transform_menu]), output])
