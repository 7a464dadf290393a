"""Resampling explorer: pool an image down, bring it back up, see shapes and PSNR (notebook 02)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import metrics, pooling
from ..images import center_crop, sample_image, to_tensor
from . import live_output


def _default_image() -> np.ndarray:
    return center_crop(sample_image("astronaut"), 256)


def _draw(image: torch.Tensor, kind: str, size: int, stride: int, method: str):
    low = pooling.downsample(image, kind, size, stride)
    restored = pooling.upsample(low, method, stride, size=image.shape[2:])
    quality = metrics.psnr(image, restored).item()
    figure, axes = plt.subplots(1, 3, figsize=(10, 4))
    panels = [
        (image, f"input {tuple(image.shape[1:])}"),
        (low, f"{kind} pool {size}x{size}, stride {stride}\n-> {tuple(low.shape[1:])}, "
              f"{low[0].numel() / image[0].numel():.1%} of the values"),
        (restored, f"{method} x{stride} -> {tuple(restored.shape[1:])}\n"
                   f"PSNR {quality:.2f} dB"),
    ]
    for axis, (tensor, title) in zip(axes, panels, strict=True):
        # nearest display so the pooled pixels stay visible as blocks
        axis.imshow(tensor[0].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        axis.set_title(title, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    plt.show()


def resampling_explorer(image: np.ndarray | None = None, kind: str = "average", size: int = 4,
                        stride: int = 4, method: str = "bilinear"):
    """Downsample ``image`` (uint8 ``(H, W, 3)``; default: a photo crop), upsample it back.

    Draws the default settings as a static figure, then returns a panel to choose the pooling
    ``kind``, window ``size``, ``stride`` (the downsampling factor, also the upsampling factor)
    and upsampling ``method``; shapes and PSNR against the input are shown.
    """
    import ipywidgets as widgets

    if kind not in pooling.DOWNSAMPLING or method not in pooling.UPSAMPLING:
        raise ValueError(f"kind must be one of {pooling.DOWNSAMPLING} and method one of "
                         f"{pooling.UPSAMPLING}")
    tensor = to_tensor(_default_image() if image is None else image)
    _draw(tensor, kind, size, stride, method)
    controls = {
        "kind": widgets.Dropdown(options=pooling.DOWNSAMPLING, value=kind, description="pool"),
        "size": widgets.IntSlider(value=size, min=1, max=8, description="size"),
        "stride": widgets.IntSlider(value=stride, min=1, max=8, description="stride"),
        "method": widgets.Dropdown(options=pooling.UPSAMPLING, value=method,
                                   description="upsample"),
    }

    output = live_output(
        lambda **settings: _draw(tensor, **settings), controls
    )
    return widgets.VBox([widgets.HBox(list(controls.values())[:2]),
                         widgets.HBox(list(controls.values())[2:]), output])
