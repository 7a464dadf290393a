"""Mini-JPEG against Pillow's JPEG at the same quality, side by side (notebook 05)."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from ..codecs import classical, mini_jpeg

TRANSFORM_LABELS = {"dct": "mini-JPEG (DCT)", "haar": "mini-JPEG (Haar DWT)"}


def _draw_comparison(image: np.ndarray, window, quality: int, transform: str):
    ours = mini_jpeg.evaluate(image, quality, transform)
    pillow = classical.evaluate(image, "jpeg", quality)
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.9))
    panels = [(image, "original (crop)"),
              (ours.reconstruction, f"{TRANSFORM_LABELS[transform]} q={quality}"),
              (pillow.reconstruction, f"Pillow JPEG 4:2:0 q={quality}")]
    for axis, (picture, title), result in zip(axes, panels, (None, ours, pillow), strict=True):
        axis.imshow(picture[window])
        if result is not None:
            title += (f"\n{result.num_bytes / 1024:.1f} KiB, {result.bpp:.3f} bpp, "
                      f"PSNR {result.psnr:.2f} dB")
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    figure.tight_layout()
    plt.show()
    return ours, pillow


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
    output = widgets.interactive_output(
        lambda quality, transform: _draw_comparison(image, window, quality, transform),
        {"quality": quality_slider, "transform": transform_menu})
    return widgets.VBox([widgets.HBox([quality_slider, transform_menu]), output])
