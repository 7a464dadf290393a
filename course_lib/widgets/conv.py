"""Kernel editor: pick a preset or type 3x3 weights and see the filtered image (notebook 01)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import conv
from ..images import center_crop, sample_image, to_tensor
from . import live_output


def _default_image() -> np.ndarray:
    return center_crop(sample_image("astronaut"), 256)


def _show_response(image: torch.Tensor, kernel: torch.Tensor):
    """The filtered image ready to display, and a one-line description of it.

    A kernel whose weights sum to 0 answers 0 on flat regions (an edge or detail detector): its
    response is signed, so the magnitude is shown, scaled to its largest value.
    """
    out = conv.filter_image(image, kernel)
    total = kernel.sum().item()
    if abs(total) < 1e-6:
        magnitude = out.abs().mean(dim=1)[0]
        peak = magnitude.max().clamp_min(1e-12)
        return (magnitude / peak).numpy(), f"|response| / {peak:.3g} (weights sum to 0)"
    shown = out[0].permute(1, 2, 0).clamp(0, 1).numpy()
    clipped = ((out < 0) | (out > 1)).float().mean().item()
    return shown, f"weights sum to {total:.3g}, {100 * clipped:.1f} % of values clipped"


def _draw(image: torch.Tensor, kernel: torch.Tensor, name: str):
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.4), gridspec_kw={"width_ratios": [3, 2, 3]})
    axes[0].imshow(image[0].permute(1, 2, 0).numpy())
    axes[0].set_title(f"input {tuple(image.shape[2:])}")
    limit = max(kernel.abs().max().item(), 1e-6)
    axes[1].imshow(kernel.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
    for (row, col), value in np.ndenumerate(kernel.numpy()):
        colour = "white" if abs(value) > 0.6 * limit else "black"
        axes[1].text(col, row, f"{value:.3g}", ha="center", va="center", fontsize=11,
                     color=colour)
    axes[1].set_title(f"kernel: {name}")
    shown, description = _show_response(image, kernel)
    axes[2].imshow(shown, cmap="gray", vmin=0, vmax=1)
    axes[2].set_title(description, fontsize=9)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    plt.show()


def kernel_editor(image: np.ndarray | None = None, preset: str = "sharpen"):
    """Apply a 3x3 kernel to ``image`` (uint8 ``(H, W, 3)``; default: a photo crop) live.

    Draws the default (``preset``) as a static figure, then returns a panel: a preset menu and
    nine editable weights; the image is re-filtered (reflect padding) on every change.
    """
    import ipywidgets as widgets

    presets = conv.classic_kernels()
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {list(presets)}")
    tensor = to_tensor(_default_image() if image is None else image)
    _draw(tensor, presets[preset], preset)

    menu = widgets.Dropdown(options=list(presets), value=preset, description="preset")
    boxes = [
        widgets.FloatText(value=float(v), step=0.1, layout=widgets.Layout(width="70px"))
        for v in presets[preset].flatten()
    ]

    def load_preset(change):
        for box, value in zip(boxes, presets[change["new"]].flatten(), strict=True):
            box.value = float(value)

    menu.observe(load_preset, names="value")

    def render(**weights):
        kernel = torch.tensor([weights[f"w{i}"] for i in range(9)]).reshape(3, 3)
        matches = [n for n, k in presets.items() if torch.allclose(k, kernel)]
        _draw(tensor, kernel, matches[0] if matches else "custom")

    output = live_output(render, {f"w{i}": box for i, box in enumerate(boxes)})
    grid = widgets.GridBox(boxes, layout=widgets.Layout(grid_template_columns="repeat(3, 75px)"))
    return widgets.VBox([widgets.HBox([menu, grid]), output])
