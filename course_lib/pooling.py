"""Pooling and resampling by hand: max/average pooling, upsampling, pixel shuffle, receptive field.

Each function mirrors one in ``torch.nn.functional`` (``max_pool2d``, ``avg_pool2d``,
``max_unpool2d``, ``interpolate``, ``pixel_shuffle``, ``pixel_unshuffle``) and the tests hold
them to it. Images are ``(N, C, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .conv import as_pair, check_image, im2col


def _pool_geometry(x, kernel_size, stride, padding):
    check_image(x)
    kernel = as_pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        # a window made only of padding would have no pixel to pool (PyTorch's rule too)
        raise ValueError(f"padding {padding} must be at most half the kernel size {kernel}")
    return kernel, stride, padding


def max_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0,
               return_indices: bool = False):
    """Largest value of each ``kernel_size`` window, windows ``stride`` apart (default: kernel).

    ``x (N, C, H, W)`` -> ``(N, C, H_out, W_out)``; with ``return_indices`` also the position of
    each maximum as a flat index ``row * W + col`` into its input plane (what
    ``F.max_unpool2d`` needs). Padding counts as ``-inf``, so it never wins.
    """
    kernel, stride, padding = _pool_geometry(x, kernel_size, stride, padding)
    batch, channels, height, width = x.shape
    # The -inf border is added here; im2col itself would pad with zeros.
    padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), value=float("-inf"))
    windows = im2col(padded.reshape(batch * channels, 1, *padded.shape[2:]), kernel, stride)
    values, tap = windows.max(dim=1)  # (N*C, L): best value and which tap held it
    out_h = (padded.shape[2] - kernel[0]) // stride[0] + 1
    out_w = (padded.shape[3] - kernel[1]) // stride[1] + 1
    values = values.reshape(batch, channels, out_h, out_w)
    if not return_indices:
        return values
    out_row = torch.arange(out_h).view(-1, 1) * stride[0] - padding[0]
    out_col = torch.arange(out_w).view(1, -1) * stride[1] - padding[1]
    tap = tap.reshape(batch, channels, out_h, out_w)
    rows = out_row + tap // kernel[1]
    cols = out_col + tap % kernel[1]
    return values, rows * width + cols


def avg_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0) -> torch.Tensor:
    """Mean of each ``kernel_size`` window, windows ``stride`` apart (default: kernel).

    ``x (N, C, H, W)`` -> ``(N, C, H_out, W_out)``. Zero padding counts in the mean (PyTorch's
    default ``count_include_pad=True``).
    """
    kernel, stride, padding = _pool_geometry(x, kernel_size, stride, padding)
    batch, channels = x.shape[:2]
    planes = x.reshape(batch * channels, 1, *x.shape[2:])
    windows = im2col(planes, kernel, stride, padding)
    out_h = (x.shape[2] + 2 * padding[0] - kernel[0]) // stride[0] + 1
    out_w = (x.shape[3] + 2 * padding[1] - kernel[1]) // stride[1] + 1
    return windows.mean(dim=1).reshape(batch, channels, out_h, out_w)


def max_unpool2d(values: torch.Tensor, indices: torch.Tensor, output_size) -> torch.Tensor:
    """Put each pooled maximum back where it came from; every other pixel is 0.

    ``values, indices (N, C, h, w)`` from ``max_pool2d(..., return_indices=True)``,
    ``output_size (H, W)`` -> ``(N, C, H, W)``.
    """
    check_image(values, "values")
    if indices.shape != values.shape:
        raise ValueError(f"indices {tuple(indices.shape)} must match values "
                         f"{tuple(values.shape)}")
    height, width = as_pair(tuple(output_size)[-2:], "output_size", 1)
    if indices.numel() and (indices.min() < 0 or indices.max() >= height * width):
        raise ValueError(f"indices fall outside a {height}x{width} plane")
    batch, channels = values.shape[:2]
    out = values.new_zeros(batch, channels, height * width)
    out.scatter_(2, indices.reshape(batch, channels, -1), values.reshape(batch, channels, -1))
    return out.reshape(batch, channels, height, width)


# ----------------------------------------------------------------------------------------------
# Upsampling

def _target_size(x: torch.Tensor, size, factor) -> tuple[int, int]:
    check_image(x)
    if (size is None) == (factor is None):
        raise ValueError("give exactly one of size=(H, W) or factor=int")
    if size is not None:
        return as_pair(tuple(size), "size", 1)
    factor = as_pair(factor, "factor", 1)
    return x.shape[2] * factor[0], x.shape[3] * factor[1]


def upsample_nearest(x: torch.Tensor, size=None, factor=None) -> torch.Tensor:
    """Nearest-neighbour resize of ``x (N, C, H, W)`` to ``size (H', W')`` or ``factor * (H, W)``.

    Output pixel ``i`` copies input pixel ``floor(i * H / H')``, like
    ``F.interpolate(mode="nearest")``; for an integer factor every pixel becomes a block.
    """
    out_h, out_w = _target_size(x, size, factor)
    rows = (torch.arange(out_h, dtype=torch.float64) * (x.shape[2] / out_h)).floor().long()
    cols = (torch.arange(out_w, dtype=torch.float64) * (x.shape[3] / out_w)).floor().long()
    return x[:, :, rows.clamp(max=x.shape[2] - 1)][:, :, :, cols.clamp(max=x.shape[3] - 1)]


def _bilinear_taps(in_size: int, out_size: int):
    """For each output index: the two input indices around it and the weight of the second.

    Pixel centres line up (``align_corners=False``): output ``i`` samples input coordinate
    ``(i + 0.5) * in/out - 0.5``, clamped at 0; the far neighbour is clamped to the last pixel.
    """
    scale = in_size / out_size
    source = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    low = source.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    return low, high, source - low


def upsample_bilinear(x: torch.Tensor, size=None, factor=None) -> torch.Tensor:
    """Bilinear resize of ``x (N, C, H, W)`` to ``size`` or ``factor * (H, W)``.

    Interpolates between the two nearest rows, then between the two nearest columns; equals
    ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing when shrinking).
    """
    out_h, out_w = _target_size(x, size, factor)
    top, bottom, down = _bilinear_taps(x.shape[2], out_h)
    left, right, across = _bilinear_taps(x.shape[3], out_w)
    down = down.to(x.dtype).view(-1, 1)
    across = across.to(x.dtype)
    rows = x[:, :, top] * (1 - down) + x[:, :, bottom] * down
    return rows[..., left] * (1 - across) + rows[..., right] * across


def bilinear_kernel(factor: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``(k, k)`` tent kernel with which a stride-``factor`` transposed conv is bilinear.

    ``k = 2 * factor - factor % 2``; weights ``(1 - |i - c| / factor)`` along each axis around
    the centre ``c``. Each output pixel receives weights summing to 1.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    size = 2 * factor - factor % 2
    centre = (size - 1) / 2
    tent = 1 - (torch.arange(size, dtype=torch.float64) - centre).abs() / factor
    return torch.outer(tent, tent).to(dtype)


def _upsample_with_kernel(x: torch.Tensor, kernel: torch.Tensor, factor: int) -> torch.Tensor:
    """Depthwise stride-``factor`` transposed conv of ``x (N, C, H, W)`` with one ``(k, k)``
    kernel (``k - factor`` even), borders replicated -> ``(N, C, factor*H, factor*W)``."""
    batch, channels, height, width = x.shape
    size = kernel.shape[-1]
    padding = (size - factor) // 2
    # Stamps of pixels up to `margin` beyond the border reach the output; replicating the
    # border there stands in for them, as interpolation clamps. Their extra rows are cropped.
    margin = (size - 1 - padding) // factor
    planes = F.pad(x.reshape(batch * channels, 1, height, width), (margin,) * 4,
                   mode="replicate")
    out = F.conv_transpose2d(planes, kernel.to(x.dtype).reshape(1, 1, size, size),
                             stride=factor, padding=padding + margin * factor)
    return out.reshape(batch, channels, factor * height, factor * width)


def upsample_transposed(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample ``x (N, C, H, W)`` by an integer ``factor`` with a transposed convolution.

    The kernel is :func:`bilinear_kernel`, so the result equals :func:`upsample_bilinear`:
    interpolation is a transposed convolution with a fixed kernel, and a learned upsampler is
    the same operation with learned weights.
    """
    check_image(x)
    factor = as_pair(factor, "factor", 1)[0]
    return _upsample_with_kernel(x, bilinear_kernel(factor, x.dtype), factor)


def pixel_shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Depth to space: ``(N, C * r*r, H, W)`` -> ``(N, C, r*H, r*W)``, ``r = factor``.

    Channel ``c * r*r + i * r + j`` becomes sub-pixel ``(i, j)`` of each ``r x r`` output block.
    """
    check_image(x)
    batch, channels, height, width = x.shape
    if factor < 1 or channels % (factor * factor):
        raise ValueError(f"channels ({channels}) must be a multiple of factor**2 ({factor}**2)")
    out_channels = channels // factor**2
    blocks = x.reshape(batch, out_channels, factor, factor, height, width)
    # (N, C, i, j, H, W) -> (N, C, H, i, W, j): sub-pixel offsets sit next to their block
    return blocks.permute(0, 1, 4, 2, 5, 3).reshape(
        batch, out_channels, height * factor, width * factor
    )


def pixel_unshuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Space to depth, the inverse of :func:`pixel_shuffle`:
    ``(N, C, r*H, r*W)`` -> ``(N, C * r*r, H, W)``."""
    check_image(x)
    batch, channels, height, width = x.shape
    if factor < 1 or height % factor or width % factor:
        raise ValueError(f"H and W ({height}x{width}) must be multiples of factor {factor}")
    blocks = x.reshape(batch, channels, height // factor, factor, width // factor, factor)
    return blocks.permute(0, 1, 3, 5, 2, 4).reshape(
        batch, channels * factor * factor, height // factor, width // factor
    )


def icnr_(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """Initialise, in place, a conv weight ``(C * r*r, C_in, k, k)`` that feeds
    :func:`pixel_shuffle` so all ``r*r`` sub-pixels of a block start with the same kernel.

    The conv + shuffle then starts out equal to a convolution followed by nearest upsampling,
    which has no checkerboard (ICNR, Aitken et al. 2017). Returns ``weight``.
    """
    out_channels = weight.shape[0]
    if out_channels % (factor * factor):
        raise ValueError(f"weight has {out_channels} output channels, not a multiple of "
                         f"factor**2 = {factor * factor}")
    shared = torch.empty(out_channels // factor**2, *weight.shape[1:], dtype=weight.dtype)
    nn.init.kaiming_uniform_(shared, a=5**0.5)  # nn.Conv2d's default initialisation
    with torch.no_grad():
        weight.copy_(shared.repeat_interleave(factor * factor, dim=0))
    return weight


# ----------------------------------------------------------------------------------------------
# Learned resampling: strided convolution down, transposed convolution up

class LearnedResampler(nn.Module):
    """Downsample by ``factor`` with a strided conv and upsample back with a transposed conv.

    One ``(k, k)`` kernel each, shared by all channels; ``kernel_size`` defaults to the tent's
    ``2 * factor - factor % 2`` and must exceed ``factor`` by an even number. They start as the
    tent filter and bilinear interpolation (zero-padded to ``kernel_size``); training adapts
    them to the images. ``down``: ``(N, C, H, W) -> (N, C, H/factor, W/factor)`` (H and W
    multiples of ``factor``), ``up``: the reverse.
    """

    def __init__(self, factor: int, kernel_size: int | None = None):
        super().__init__()
        tent = bilinear_kernel(factor)
        kernel_size = tent.shape[0] if kernel_size is None else kernel_size
        if kernel_size < tent.shape[0] or (kernel_size - factor) % 2:
            raise ValueError(f"kernel_size must be >= {tent.shape[0]} and differ from the "
                             f"factor {factor} by an even number, got {kernel_size}")
        offset = (kernel_size - tent.shape[0]) // 2
        kernel = F.pad(tent, (offset,) * 4)
        self.factor = factor
        self.down_kernel = nn.Parameter(kernel / kernel.sum())
        self.up_kernel = nn.Parameter(kernel.clone())

    def down(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x)
        batch, channels, height, width = x.shape
        if height % self.factor or width % self.factor:
            raise ValueError(f"H and W ({height}x{width}) must be multiples of {self.factor}")
        size = self.down_kernel.shape[-1]
        pad = (size - self.factor) // 2  # centres each window on its factor x factor block
        planes = F.pad(x.reshape(batch * channels, 1, height, width), (pad,) * 4,
                       mode="replicate")
        out = F.conv2d(planes, self.down_kernel.reshape(1, 1, size, size), stride=self.factor)
        return out.reshape(batch, channels, height // self.factor, width // self.factor)

    def up(self, y: torch.Tensor) -> torch.Tensor:
        check_image(y)
        return _upsample_with_kernel(y, self.up_kernel, self.factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


# ----------------------------------------------------------------------------------------------
# Receptive fields

@dataclass(frozen=True)
class ReceptiveField:
    """After a layer: ``size`` input pixels seen by one output pixel, ``jump`` input pixels
    between neighbouring output pixels, ``start`` the input coordinate of output pixel 0's
    centre (negative when it lies in the padding)."""

    layer: str
    size: int
    jump: int
    start: float


def _layer_geometry(layer):
    """(name, kernel, stride, padding, dilation) along one axis, or None for pointwise layers."""
    if isinstance(layer, tuple | list):
        if not 2 <= len(layer) <= 4:
            raise ValueError(f"a layer tuple is (kernel, stride[, padding[, dilation]]), "
                             f"got {layer!r}")
        kernel, stride, padding, dilation = tuple(layer) + (0, 1)[len(layer) - 2 :]
        return f"k{kernel} s{stride}", int(kernel), int(stride), int(padding), int(dilation)
    if isinstance(layer, nn.ConvTranspose2d | nn.Upsample | nn.PixelShuffle):
        raise ValueError(f"{type(layer).__name__} upsamples: receptive_field covers encoders "
                         "(convolutions and pooling) only")
    if isinstance(layer, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        if isinstance(layer.padding, str):
            raise ValueError(f"padding={layer.padding!r} is not supported; give numbers")
        pairs = [
            as_pair(value, "layer geometry", 0)
            for value in (layer.kernel_size, layer.stride, layer.padding,
                          getattr(layer, "dilation", 1))
        ]
        if any(rows != cols for rows, cols in pairs):
            raise ValueError(f"{layer} is not square; give its rows as (k, s, p, d) tuples")
        kernel, stride, padding, dilation = (rows for rows, _ in pairs)
        return type(layer).__name__, kernel, stride, padding, dilation
    if isinstance(layer, nn.Module) and not any(True for _ in layer.children()):
        return None  # activations, normalisations, GDN: one pixel in, one pixel out
    raise ValueError(f"cannot read the geometry of {layer!r}; give (kernel, stride) tuples")


def receptive_field(layers) -> list[ReceptiveField]:
    """Receptive field after each layer of an encoder stack, along one axis.

    ``layers``: an ``nn.Sequential`` (nested ones are flattened) or a list of modules or of
    ``(kernel, stride[, padding[, dilation]])`` tuples. Pointwise modules (activations, GDN)
    are skipped. Each layer grows the field by ``(kernel - 1) * dilation * jump`` and
    multiplies the jump by its stride. Returns one :class:`ReceptiveField` per layer with a
    kernel; the last one is the field of the whole stack.
    """
    if isinstance(layers, nn.Module):
        layers = [m for m in layers.modules() if not any(True for _ in m.children())]
    size, jump, start = 1, 1, 0.0
    rows = []
    for layer in layers:
        geometry = _layer_geometry(layer)
        if geometry is None:
            continue
        name, kernel, stride, padding, dilation = geometry
        if kernel < 1 or stride < 1 or dilation < 1 or padding < 0:
            raise ValueError(f"bad layer geometry {geometry}")
        start += ((kernel - 1) * dilation / 2 - padding) * jump
        size += (kernel - 1) * dilation * jump
        jump *= stride
        rows.append(ReceptiveField(name, size, jump, start))
    return rows


# ----------------------------------------------------------------------------------------------
# Down and up again: how much a resampling pair loses

DOWNSAMPLING = ("max", "average", "subsample")
UPSAMPLING = ("nearest", "bilinear", "bicubic", "transposed")


def downsample(x: torch.Tensor, kind: str = "average", size: int = 2, stride: int | None = None
               ) -> torch.Tensor:
    """Shrink ``x (N, C, H, W)`` by pooling ``size x size`` windows ``stride`` apart.

    ``kind``: "max", "average", or "subsample" (keep the top-left pixel of each window: a
    1x1 pool, no filtering, so fine detail aliases). ``stride`` defaults to ``size``.
    """
    stride = size if stride is None else stride
    if kind == "max":
        return max_pool2d(x, size, stride)
    if kind == "average":
        return avg_pool2d(x, size, stride)
    if kind == "subsample":
        return max_pool2d(x, 1, stride)
    raise ValueError(f"unknown downsampling {kind!r}; choose one of {DOWNSAMPLING}")


def upsample(y: torch.Tensor, method: str = "bilinear", factor: int = 2, size=None
             ) -> torch.Tensor:
    """Enlarge ``y (N, C, h, w)`` by an integer ``factor``, then crop or replicate-pad the
    bottom/right to ``size (H, W)`` when given.

    ``method``: "nearest", "bilinear", "transposed" (the bilinear kernel as a transposed
    convolution, see :func:`upsample_transposed`) or "bicubic" (PyTorch's ``interpolate``,
    the one method here not written by hand).
    """
    if method == "nearest":
        out = upsample_nearest(y, factor=factor)
    elif method == "bilinear":
        out = upsample_bilinear(y, factor=factor)
    elif method == "transposed":
        out = upsample_transposed(y, factor)
    elif method == "bicubic":
        check_image(y)
        out = F.interpolate(y, scale_factor=factor, mode="bicubic", align_corners=False)
    else:
        raise ValueError(f"unknown upsampling {method!r}; choose one of {UPSAMPLING}")
    if size is None:
        return out
    height, width = as_pair(tuple(size), "size", 1)
    out = out[..., :height, :width]
    pad_h, pad_w = height - out.shape[2], width - out.shape[3]
    if pad_h or pad_w:
        out = F.pad(out, (0, pad_w, 0, pad_h), mode="replicate")
    return out
