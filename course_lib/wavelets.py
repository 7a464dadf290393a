"""The 2-D Haar wavelet transform (DWT), built like the block DCT of :mod:`course_lib.conv`.

One level of the Haar DWT is a stride-2 convolution with four 2x2 kernels: for every 2x2
block ``[[a, b], [c, d]]``

    approximation  (a + b + c + d) / 2        horizontal detail  (a + b - c - d) / 2
    vertical detail (a - b + c - d) / 2        diagonal detail    (a - b - c + d) / 2

(``pywt.dwt2(x, "haar")``'s ``cA, (cH, cV, cD)``). The four kernels are orthonormal, so the
transposed convolution with the same kernels inverts the step exactly and energy is preserved.
A multi-level DWT repeats the step on the approximation, like ``pywt.wavedec2``: the result is
the coarsest approximation and the detail triples from coarsest to finest.
"""

from __future__ import annotations

import torch

from .conv import conv2d_unfold, conv_transpose2d

SUBBANDS = ("horizontal", "vertical", "diagonal")


def haar_kernels(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The four orthonormal 2x2 Haar kernels ``(4, 1, 2, 2)``: approximation, horizontal,
    vertical, diagonal detail."""
    rows = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)  # low-, high-pass
    kernels = [torch.outer(rows[i], rows[j]) / 2 for i, j in ((0, 0), (1, 0), (0, 1), (1, 1))]
    return torch.stack(kernels)[:, None].to(dtype)


def _check_levels(levels: int) -> int:
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    return levels


def haar_dwt2(x: torch.Tensor, levels: int = 1):
    """Multi-level 2-D Haar DWT of ``x (N, 1, H, W)``, ``H`` and ``W`` multiples of
    ``2**levels``.

    Returns ``(approximation, details)``: ``approximation (N, 1, H / 2**L, W / 2**L)`` and
    ``details``, a list of ``L`` triples ``(horizontal, vertical, diagonal)``, coarsest first;
    the triple of level ``l`` (1 = finest) has shape ``(N, 1, H / 2**l, W / 2**l)``. The same
    layout as ``pywt.wavedec2(x, "haar", level=L)``.
    """
    levels = _check_levels(levels)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"x must be (N, 1, H, W), got shape {tuple(x.shape)}: transform each "
                         "channel separately")
    height, width = x.shape[-2:]
    if height % 2**levels or width % 2**levels:
        raise ValueError(
            f"x is {height}x{width}, not a multiple of 2**{levels} = {2**levels}: pad it first "
            f"(course_lib.images.pad_to_multiple(x, {2**levels}))")
    kernels = haar_kernels(x.dtype)
    details = []
    approximation = x
    for _ in range(levels):
        bands = conv2d_unfold(approximation, kernels, stride=2)
        approximation = bands[:, :1]
        details.insert(0, (bands[:, 1:2], bands[:, 2:3], bands[:, 3:4]))
    return approximation, details


def haar_idwt2(approximation: torch.Tensor, details) -> torch.Tensor:
    """Inverse of :func:`haar_dwt2`: ``(N, 1, H, W)`` from the approximation and the detail
    triples (coarsest first)."""
    kernels = haar_kernels(approximation.dtype)
    x = approximation
    for level, triple in enumerate(details):
        if len(triple) != 3 or any(band.shape != x.shape for band in triple):
            raise ValueError(
                f"detail triple {level} must hold 3 bands of the approximation's shape "
                f"{tuple(x.shape)} at that level")
        x = conv_transpose2d(torch.cat([x, *triple], dim=1), kernels, stride=2)
    return x


def mallat_layout(approximation: torch.Tensor, details) -> torch.Tensor:
    """All coefficients in one ``(N, 1, H, W)`` picture: the approximation top left, each
    level's horizontal detail below it, vertical to its right, diagonal diagonally (the usual
    way to draw a wavelet pyramid)."""
    picture = approximation
    for horizontal, vertical, diagonal in details:
        top = torch.cat([picture, vertical], dim=3)
        bottom = torch.cat([horizontal, diagonal], dim=3)
        picture = torch.cat([top, bottom], dim=2)
    return picture
