"""Demos for notebook 10: every codec at the same file size, side by side.

:func:`at_budget` finds, for one codec of :mod:`course_lib.benchmark`, the largest setting
whose file fits a budget in bits per pixel (bisection: the file grows with the setting);
:func:`side_by_side` draws every codec's picture at one budget; :func:`budget_explorer` is the
same with a menu of Kodak images and a budget slider.
"""

from __future__ import annotations

import functools
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from .. import benchmark, datasets, images, metrics
from . import live_output

KNOBS = {"quality": "q", "compression ratio": "ratio", "rate setting": "rate"}


def largest_within(size_at, low, high, budget_bits: float, integer: bool, steps: int = 8):
    """The largest setting in ``[low, high]`` whose file has at most ``budget_bits`` bits
    (``size_at(setting)`` grows with the setting), or ``low`` if even that is over."""
    if integer:
        if size_at(low) > budget_bits:
            return low
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if size_at(middle) <= budget_bits else (low, middle)
        return high if size_at(high) <= budget_bits else low
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if size_at(middle) <= budget_bits else (low, middle)
    return low


def at_budget(name: str, image: np.ndarray, budget_bpp: float):
    """``(setting, bpp, PSNR, decoded image)`` of the benchmark's codec ``name`` on ``image``
    (uint8 RGB) at the largest setting that fits ``budget_bpp``: qualities 1..100, JPEG 2000's
    compression ratio, the learned codec's fractional rate setting."""
    if budget_bpp <= 0:
        raise ValueError(f"the budget must be a positive number of bits per pixel, got "
                         f"{budget_bpp}")
    codec = benchmark.codecs()[name]
    if codec.lossless:
        raise ValueError(f"{name} is lossless: it has no setting to fit a budget")
    budget_bits = budget_bpp * image.shape[0] * image.shape[1]
    size_at = functools.lru_cache(lambda setting: 8 * len(codec.encode(image, setting)))
    if codec.setting_name == "quality":
        setting = largest_within(size_at, 1, 100, budget_bits, integer=True)
    elif codec.setting_name == "compression ratio":  # a larger ratio makes a smaller file
        setting = 1 / largest_within(lambda inverse: size_at(1 / inverse), 1 / 400, 1 / 2,
                                     budget_bits, integer=False)
    elif codec.setting_name == "rate setting":
        setting = largest_within(size_at, min(codec.settings), max(codec.settings),
                                 budget_bits, integer=False)
    else:  # another kind of setting: the largest of the benchmark's own that fits
        fitting = [s for s in codec.settings if size_at(s) <= budget_bits]
        setting = max(fitting) if fitting else min(codec.settings)
    data = codec.encode(image, setting)
    decoded = np.asarray(codec.decode(data))
    psnr = metrics.psnr(images.to_tensor(image), images.to_tensor(decoded)).item()
    return setting, metrics.bpp(len(data), *image.shape[:2]), psnr, decoded


def side_by_side(image: np.ndarray, budget_bpp: float, names, label=None, title: str = "",
                 zoom=(160, 240)) -> dict:
    """Draw the original and each codec's picture at ``budget_bpp``, zoomed on the central
    ``zoom`` pixels; returns ``{name: (setting, bpp, PSNR)}``."""
    label = label or (lambda name: benchmark.codecs()[name].label)
    zoom = (min(zoom[0], image.shape[0]), min(zoom[1], image.shape[1]))
    top, left = (image.shape[0] - zoom[0]) // 2, (image.shape[1] - zoom[1]) // 2
    window = (slice(top, top + zoom[0]), slice(left, left + zoom[1]))
    panels, results = [("original", image, "")], {}
    for name in names:
        setting, bpp, psnr, decoded = at_budget(name, image, budget_bpp)
        results[name] = (setting, bpp, psnr)
        over = " (over budget)" if bpp > budget_bpp else ""
        setting_name = benchmark.codecs()[name].setting_name
        panels.append((f"{label(name)} ({KNOBS.get(setting_name, setting_name)} {setting:.3g})",
                       decoded, f"{bpp:.3f} bpp{over}, {psnr:.2f} dB"))
    columns = 4
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.9 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (name, picture, numbers) in zip(axes.flat, panels, strict=False):
        axis.imshow(picture[window], interpolation="nearest")
        axis.set_title(f"{name}\n{numbers}" if numbers else name, fontsize=9)
    fig.suptitle(f"{title}budget {budget_bpp:.2f} bpp; zoom on the central "
                 f"{zoom[0]}×{zoom[1]} pixels")
    fig.tight_layout()
    plt.show()
    return results


def budget_explorer(names, label=None, crop: bool = False, index: int = 23,
                    budget_bpp: float = 0.25):
    """A Kodak image menu and a bpp slider over :func:`side_by_side`. The panel stays empty
    until a control moves (draw the default figure with :func:`side_by_side` first), so the
    saved notebook holds one copy of the figure."""
    image_menu = widgets.Dropdown(options=[(f"kodim{i:02d}", i) for i in range(1, 25)],
                                  value=index, description="image")
    budget_slider = widgets.FloatSlider(value=budget_bpp, min=0.1, max=2.0, step=0.05,
                                        description="bpp budget", continuous_update=False)
    def redraw(index, budget):
        image = datasets.load_kodak(index)
        if crop:
            image = images.center_crop(image, 256, 384)
        side_by_side(image, budget, names, label, title=f"kodim{index:02d}: ")

    panel = live_output(redraw, {"index": image_menu, "budget": budget_slider})
    return widgets.VBox([widgets.HBox([image_menu, budget_slider]), panel])
