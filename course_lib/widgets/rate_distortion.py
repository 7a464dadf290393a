"""Latent channels and their bit cost (notebook 06): where a factorized prior spends its bits.

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
from ..rd_demos import bits_per_channel, channel_density


@dataclass
class ChannelCosts:
    """The latents of one image and what they cost.

    ``y``: float ``(M, h, w)``; ``symbols``: the coded integers ``(M, h, w)`` (rounded around
    each channel's median); ``bits``: ``-log2 p`` of each coded value ``(M, h, w)``;
    ``order``: channels by total cost, most expensive first; ``pixels``: H·W of the image.
    """

    y: np.ndarray
    symbols: np.ndarray
    bits: np.ndarray
    medians: np.ndarray
    order: np.ndarray
    pixels: int


@torch.no_grad()
def channel_costs(model, image: np.ndarray) -> ChannelCosts:
    """Analyse uint8 ``image (H, W, 3)`` with a factorized-prior ``model``."""
    model.eval()
    x = to_tensor(image)
    padded, _ = pad_to_multiple(x, model.multiple)
    y = model.g_a(padded)
    bottleneck = model.entropy_bottleneck
    _, likelihoods = bottleneck(y, mode="round")
    medians = bottleneck.medians
    symbols = torch.round(y - medians.view(1, -1, 1, 1)).long()
    totals = bits_per_channel(likelihoods)
    return ChannelCosts(y[0].numpy(), symbols[0].numpy(), -np.log2(likelihoods[0].double()
                                                                   .numpy()),
                        medians.numpy(), np.argsort(-totals, kind="stable"),
                        x.shape[-2] * x.shape[-1])


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
    median = float(costs.medians[channel])
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

    output = widgets.interactive_output(render, {"rank": slider})
    return widgets.VBox([slider, output])
