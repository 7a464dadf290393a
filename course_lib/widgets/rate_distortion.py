"""Latent channels and their bit cost (notebook 06): where a factorized prior spends its bits.

:func:`channel_costs` measures any learned codec's latents (notebook 07's demo uses it too).

Pick a latent channel by its rank (0 = the channel that costs the most bits on this image):
the figure shows the channel's rounded values, the bits each position costs (``-log2 p``), and
the learned density of the channel against the histogram of its values.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..images import pad_to_multiple, to_tensor
from ..recipes.rate_distortion import channel_density
from . import live_output


@dataclass
class ChannelCosts:
    """The latents of one image under a learned codec's model and what each costs in the file.

    ``symbols``: the coded integers ``(M, h, w)`` (:meth:`~course_lib.models.CompressionModel.
    symbols`); ``means``: float64 ``(M, h, w)``, what each is coded around (a factorized
    prior's channel medians; a hyperprior's predicted means); ``bits``: ``-log2 p`` of each
    under the model's integer tables ``(M, h, w)``, what the file pays up to a few bytes;
    ``z_bits``: the side information's bits (0 for a factorized prior); ``y``: float32
    ``(M, h, w)``, the latents before rounding; ``order``: channels by total cost, most
    expensive first; ``size``: ``(H, W)`` of the image.
    """

    y: np.ndarray
    symbols: np.ndarray
    means: np.ndarray
    bits: np.ndarray
    z_bits: float
    order: np.ndarray
    size: tuple[int, int]

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]

    @property
    def y_hat(self) -> torch.Tensor:
        """``(1, M, h, w)`` float32: the latents as the decoder rebuilds them."""
        return torch.from_numpy(self.symbols + self.means).float()[None]


@torch.no_grad()
def channel_costs(model, image: np.ndarray, rate=None) -> ChannelCosts:
    """Analyse uint8 ``image (H, W, 3)`` with a learned codec's ``model`` (any of
    :mod:`course_lib.models`) at rate setting ``rate``."""
    model.eval()
    x, _ = pad_to_multiple(to_tensor(image), model.multiple)
    coded = model.symbols(x, rate, means=True)
    tables = getattr(model, "gaussian_conditional", model.entropy_bottleneck).table()
    bits = tables.bits_per_value(coded.y, coded.y_indexes)[0]
    z_bits = 0.0
    if coded.z is not None:
        z_bits = model.entropy_bottleneck.table().information_bits(coded.z, coded.z_indexes)
    totals = bits.sum(axis=(1, 2))
    return ChannelCosts(model.analysis(x, rate)[0][0].numpy(), coded.y[0], coded.means[0], bits,
                        z_bits, np.argsort(-totals, kind="stable"), tuple(image.shape[:2]))


def _draw(model, image: np.ndarray, costs: ChannelCosts, rank: int) -> None:
    channel = int(costs.order[rank])
    totals = costs.bits.sum(axis=(1, 2))
    figure = plt.figure(figsize=(12, 7))
    grid = figure.add_gridspec(2, 3, height_ratios=(1, 0.9))
    axis = figure.add_subplot(grid[0, 0])
    axis.imshow(image)
    axis.set_title(f"image: {totals.sum() / costs.pixels:.3f} bpp estimated", fontsize=10)
    axis.axis("off")
    planes = [(costs.symbols[channel], "RdBu_r", f"channel {channel}: coded integers"),
              (costs.bits[channel], "magma", f"bits per position: {totals[channel]:.0f} in all")]
    for column, (plane, cmap, title) in enumerate(planes, start=1):
        axis = figure.add_subplot(grid[0, column])
        limit = max(float(np.abs(plane).max()), 1.0)
        shown = axis.imshow(plane, cmap=cmap, interpolation="nearest",
                            vmin=-limit if cmap == "RdBu_r" else 0, vmax=limit)
        axis.set_title(title, fontsize=10)
        axis.axis("off")
        figure.colorbar(shown, ax=axis, fraction=0.035)

    axis = figure.add_subplot(grid[1, :2])
    values = costs.y[channel].ravel()
    median = float(costs.means[channel, 0, 0])
    span = max(3.0, float(np.abs(values - median).max()) + 1.5)
    noisy = values + np.random.default_rng(0).uniform(-0.5, 0.5, values.size)
    axis.hist(noisy, bins=60, range=(median - span, median + span), density=True,
              color="0.75", label="histogram of y + noise on this image")
    grid_values = np.linspace(median - span, median + span, 400)
    axis.plot(grid_values, channel_density(model.entropy_bottleneck, channel, grid_values),
              color="C0", label="learned density of y + noise")
    points = median + np.arange(np.ceil(-span), np.floor(span) + 1)
    axis.plot(points, channel_density(model.entropy_bottleneck, channel, points), "o",
              color="C3", markersize=4, label="probability of each coded integer")
    axis.set_xlabel(f"value of channel {channel} (grid centred on its median {median:.2f})")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)

    axis = figure.add_subplot(grid[1, 2])
    ranked = totals[costs.order] / costs.pixels
    colours = ["C3" if position == rank else "C0" for position in range(ranked.size)]
    axis.bar(np.arange(ranked.size), ranked, color=colours, width=1.0)
    axis.set_yscale("log")
    axis.set_xlabel("channels, most expensive first")
    axis.set_ylabel("bpp")
    axis.set_title(f"rank {rank}: {ranked[rank]:.4f} bpp "
                   f"({ranked[rank] / ranked.sum():.1%} of the total)", fontsize=10)
    figure.tight_layout()
    plt.show()


def channel_explorer(model, image: np.ndarray, rank: int = 0):
    """Explore the latent channels of a factorized-prior ``model`` on ``image`` (uint8
    ``(H, W, 3)``, a crop of about 256 x 256 keeps it quick).

    Draws the channel of rank ``rank`` (0 = most bits) as a static figure, then returns a
    panel with a slider over the ranks.
    """
    import ipywidgets as widgets

    costs = channel_costs(model, image)
    if not 0 <= rank < costs.order.size:
        raise ValueError(f"rank must be in 0..{costs.order.size - 1}, got {rank}")
    _draw(model, image, costs, rank)
    slider = widgets.IntSlider(value=rank, min=0, max=costs.order.size - 1,
                               description="rank", continuous_update=False)

    def render(rank):
        _draw(model, image, costs, rank)

    output = live_output(render, {"rank": slider})
    return widgets.VBox([slider, output])
