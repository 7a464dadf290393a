"""Demo for notebook 09: residual images and their histograms, per predictor, with the bits
each would cost."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from ..codecs import lossless, png
from ..entropy import empirical_entropy
from . import live_output

PREDICTORS = (*png.FILTERS, "MED (LOCO-I)", "4 neighbours (polyphase)")


def residuals(plane: np.ndarray, predictor: str) -> np.ndarray:
    """int32 residuals of one uint8 plane ``(H, W)`` under ``predictor`` (one of
    :data:`PREDICTORS`), wrapped into -128..127 as the coders send them.

    PNG's filters and MED predict from the left and upper neighbours (causal: a decoder has
    them); "4 neighbours (polyphase)" averages left, right, upper and lower neighbours (edges
    repeated), what the learned coder's last pass sees for a quarter of the pixels.
    """
    x = np.asarray(plane, dtype=np.int32)
    if predictor in png.FILTERS:
        prediction = png.predictions(plane, predictor)
    elif predictor == "MED (LOCO-I)":
        prediction = lossless.predict(x, tile=lossless.MAX_TILE)
    elif predictor == "4 neighbours (polyphase)":
        padded = np.pad(x, 1, mode="edge")
        prediction = (padded[1:-1, :-2] + padded[1:-1, 2:] + padded[:-2, 1:-1]
                      + padded[2:, 1:-1] + 2) // 4
    else:
        raise ValueError(f"unknown predictor {predictor!r}; choose one of {PREDICTORS}")
    return (x - prediction + 128) % 256 - 128


def _draw(planes: dict, name: str, predictor: str) -> float:
    plane = planes[name]
    residual = residuals(plane, predictor)
    bits = empirical_entropy(residual)
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.2),
                                gridspec_kw={"width_ratios": [1, 1, 1.1]})
    axes[0].imshow(plane, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title(f"{name}: the plane (entropy {empirical_entropy(plane):.2f} bits)")
    axes[1].imshow(residual, cmap="RdBu_r", vmin=-32, vmax=32)
    axes[1].set_title(f"{predictor}: residual (±32 shown)")
    values, counts = np.unique(residual, return_counts=True)
    axes[2].semilogy(values, counts / counts.sum(), ".", markersize=3)
    axes[2].set_xlim(-64, 64)
    axes[2].set_xlabel("residual")
    axes[2].set_ylabel("share of pixels")
    axes[2].set_title(f"histogram: {bits:.2f} bits/pixel with one table")
    for axis in axes[:2]:
        axis.axis("off")
    figure.tight_layout()
    plt.show()
    return bits


def residual_explorer(planes: dict, predictor: str = "MED (LOCO-I)", name: str | None = None):
    """Choose a plane (``planes``: name -> uint8 (H, W)) and a predictor: the residual image,
    its histogram and its zeroth-order entropy (the bits per pixel of a coder with one table
    for the whole plane). Draws the default state as a static figure, then returns the live
    panel."""
    name = next(iter(planes)) if name is None else name
    _draw(planes, name, predictor)
    plane_choice = widgets.Dropdown(options=list(planes), value=name, description="plane")
    predictor_choice = widgets.Dropdown(options=list(PREDICTORS), value=predictor,
                                        description="predictor")
    output = live_output(
        lambda name, predictor: _draw(planes, name, predictor),
        {"name": plane_choice, "predictor": predictor_choice})
    return widgets.VBox([widgets.HBox([plane_choice, predictor_choice]), output])
