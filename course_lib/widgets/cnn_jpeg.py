"""Plain JPEG against JPEG + the post-filter, and the quality the predictor picks (notebook 08)."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from .. import cnn_jpeg
from ..codecs import classical
from . import live_output


def _draw(image: np.ndarray, window, quality: int) -> dict:
    data = classical.encode(image, "jpeg", quality)
    decoded = classical.decode(data)
    repaired = cnn_jpeg.filter_jpeg(decoded, quality)
    plain_db = cnn_jpeg.psnr_uint8(image, decoded)
    filtered_db = cnn_jpeg.psnr_uint8(image, repaired)
    state = {"quality": quality, "bytes": len(data), "psnr_jpeg": plain_db,
             "psnr_filtered": filtered_db, "predicted_quality": None, "exact_quality": None}
    caption = "filtered PSNR out of JPEG's reach"
    if cnn_jpeg.TARGET_RANGE[0] <= filtered_db <= cnn_jpeg.TARGET_RANGE[1]:
        state["predicted_quality"] = cnn_jpeg.predict_quality(image, filtered_db)
        state["exact_quality"] = cnn_jpeg.bisect_quality(image, filtered_db)
        size = cnn_jpeg.jpeg_psnr(image, state["exact_quality"])[1]
        caption = (f"plain JPEG needs q={state['predicted_quality']} (CNN) / "
                   f"q={state['exact_quality']} (bisection), {size / 1024:.1f} KiB")
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
    panels = [(image, "original (crop)"),
              (decoded, f"JPEG q={quality}: {len(data) / 1024:.1f} KiB\n{plain_db:.2f} dB"),
              (repaired, f"same file + filter: {filtered_db:.2f} dB\n{caption}")]
    for axis, (picture, title) in zip(axes, panels, strict=True):
        axis.imshow(picture[window], interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    plt.show()
    return state


def filter_explorer(image: np.ndarray, quality: int = 20,
                    window: tuple[slice, slice] | None = None):
    """A JPEG quality slider: the original, plain JPEG and JPEG + filter, side by side.

    Titles give the real file size and the PSNRs of the whole uint8 RGB ``image``; the last
    panel also says which quality plain JPEG would need to reach the filtered PSNR, as the
    quality predictor guesses it and as bisection finds it. Panels show ``window`` (default:
    a 96 x 128 crop at the centre, drawn without smoothing so that the blocks show). Draws the
    default state as a static figure, then returns the live panel; the figure's numbers are
    in the panel's ``state`` attribute.
    """
    if not 1 <= int(quality) <= 95:
        raise ValueError(f"quality must be in 1..95, got {quality}")
    if window is None:
        top, left = image.shape[0] // 2 - 48, image.shape[1] // 2 - 64
        window = (slice(max(top, 0), top + 96), slice(max(left, 0), left + 128))
    state = _draw(image, window, int(quality))
    slider = widgets.IntSlider(value=int(quality), min=1, max=95, description="quality",
                               continuous_update=False)
    output = live_output(lambda quality: _draw(image, window, quality), {"quality": slider})
    panel = widgets.VBox([slider, output])
    panel.state = state
    return panel
