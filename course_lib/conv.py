"""Convolution by hand: loops, im2col, transposed convolution, classic kernels, DCT as convolution.

Everything follows the deep-learning conventions of ``torch.nn.functional``:

* "convolution" is cross-correlation (the kernel is not flipped);
* images are ``(N, C_in, H, W)``; a convolution weight is ``(C_out, C_in, kH, kW)``; a
  transposed-convolution weight is ``(C_in, C_out, kH, kW)``;
* ``stride``, ``padding`` and ``dilation`` are an int or an ``(h, w)`` pair, padding is zeros.

The 8x8 DCT-II used by JPEG is a convolution too: :func:`block_dct` is a stride-8 convolution
with 64 fixed kernels and :func:`block_idct` the matching transposed convolution.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def as_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or an (h, w) pair of ints, each at least ``minimum``."""
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0,
                     dilation: int = 1) -> int:
    """Output length of a convolution along one axis.

    The dilated kernel spans ``dilation * (kernel_size - 1) + 1`` pixels; it fits
    ``(size + 2 * padding - span) // stride + 1`` times when it steps by ``stride``.
    """
    span = dilation * (kernel_size - 1) + 1
    return (size + 2 * padding - span) // stride + 1


def check_image(x: torch.Tensor, name: str = "x") -> None:
    """Refuse anything but a batch of images, a (N, C, H, W) tensor."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (N, C, H, W) tensor, got {shape}")


def _conv_geometry(x, weight, bias, stride, padding, dilation, in_channel_axis: int):
    """Validate conv arguments; return the normalised (stride, padding, dilation) pairs."""
    check_image(x)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise ValueError("weight must be a 4-D tensor (out/in channels, kH, kW)")
    if weight.shape[in_channel_axis] != x.shape[1]:
        raise ValueError(
            f"weight expects {weight.shape[in_channel_axis]} input channels, "
            f"x has {x.shape[1]}"
        )
    out_channels = weight.shape[1 - in_channel_axis]
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got {tuple(bias.shape)}")
    return (
        as_pair(stride, "stride", 1),
        as_pair(padding, "padding", 0),
        as_pair(dilation, "dilation", 1),
    )


def _output_hw(x, kernel_hw, stride, padding, dilation) -> tuple[int, int]:
    out_hw = tuple(
        conv_output_size(x.shape[2 + a], kernel_hw[a], stride[a], padding[a], dilation[a])
        for a in range(2)
    )
    if min(out_hw) < 1:
        raise ValueError(
            f"the kernel {tuple(kernel_hw)} (dilation {dilation}) does not fit in the padded "
            f"input {tuple(x.shape[2:])} + 2*{padding}: pad more or use a smaller kernel"
        )
    return out_hw


def conv2d_loops(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 stride=1, padding=0, dilation=1) -> torch.Tensor:
    """2-D convolution written as loops over output pixels and output channels.

    ``x (N, C_in, H, W)``, ``weight (C_out, C_in, kH, kW)``, ``bias (C_out,)`` ->
    ``(N, C_out, H_out, W_out)`` with ``H_out = conv_output_size(H, kH, ...)``. Slow: it is the
    definition, for reading and for checking :func:`conv2d_unfold` on small inputs.
    """
    stride, padding, dilation = _conv_geometry(x, weight, bias, stride, padding, dilation, 1)
    out_h, out_w = _output_hw(x, weight.shape[2:], stride, padding, dilation)
    out_channels, _, kernel_h, kernel_w = weight.shape
    x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    span_h = dilation[0] * (kernel_h - 1) + 1
    span_w = dilation[1] * (kernel_w - 1) + 1
    out = x.new_zeros(x.shape[0], out_channels, out_h, out_w)
    for i in range(out_h):
        for j in range(out_w):
            top, left = i * stride[0], j * stride[1]
            # The input window seen by output pixel (i, j): (N, C_in, kH, kW), taps `dilation`
            # pixels apart.
            window = x[:, :, top : top + span_h : dilation[0], left : left + span_w : dilation[1]]
            for c in range(out_channels):
                # One number per image: every input channel and every tap, weighted and summed.
                out[:, c, i, j] = (window * weight[c]).sum(dim=(1, 2, 3))
    if bias is not None:
        out += bias.view(1, -1, 1, 1)
    return out


def im2col(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """Gather every kernel window of ``x`` into a column (same layout as ``F.unfold``).

    ``x (N, C, H, W)`` -> ``(N, C * kH * kW, H_out * W_out)``: column ``l`` holds the window of
    output pixel ``l`` (row-major), entry ``c * kH * kW + ki * kW + kj`` is channel ``c`` at tap
    ``(ki, kj)``. The loop runs over the ``kH * kW`` taps, not over pixels: each tap is one
    strided slice of the padded image, which is why this is fast.
    """
    check_image(x)
    kernel_h, kernel_w = as_pair(kernel_size, "kernel_size", 1)
    stride, padding, dilation = (
        as_pair(stride, "stride", 1),
        as_pair(padding, "padding", 0),
        as_pair(dilation, "dilation", 1),
    )
    out_h, out_w = _output_hw(x, (kernel_h, kernel_w), stride, padding, dilation)
    x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    batch, channels = x.shape[:2]
    columns = x.new_empty(batch, channels, kernel_h, kernel_w, out_h, out_w)
    for ki in range(kernel_h):
        for kj in range(kernel_w):
            top, left = ki * dilation[0], kj * dilation[1]
            columns[:, :, ki, kj] = x[
                :,
                :,
                top : top + stride[0] * (out_h - 1) + 1 : stride[0],
                left : left + stride[1] * (out_w - 1) + 1 : stride[1],
            ]
    return columns.reshape(batch, channels * kernel_h * kernel_w, out_h * out_w)


def conv2d_unfold(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride=1, padding=0, dilation=1) -> torch.Tensor:
    """2-D convolution as one matrix product: ``weight (C_out, C_in*kH*kW) @ im2col(x)``.

    Same arguments and result as :func:`conv2d_loops` and ``F.conv2d`` (no groups).
    """
    stride, padding, dilation = _conv_geometry(x, weight, bias, stride, padding, dilation, 1)
    out_h, out_w = _output_hw(x, weight.shape[2:], stride, padding, dilation)
    columns = im2col(x, weight.shape[2:], stride, padding, dilation)
    out = weight.reshape(weight.shape[0], -1) @ columns  # (N, C_out, H_out * W_out)
    if bias is not None:
        out = out + bias.view(1, -1, 1)
    return out.reshape(x.shape[0], weight.shape[0], out_h, out_w)


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride=1, padding=0, output_padding=0, dilation=1) -> torch.Tensor:
    """Transposed convolution: every input pixel stamps a weighted copy of the kernel.

    ``x (N, C_in, H, W)``, ``weight (C_in, C_out, kH, kW)`` (PyTorch's layout), ``bias (C_out,)``
    -> ``(N, C_out, H_out, W_out)`` with
    ``H_out = (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1``.
    Input pixel ``(i, j)`` adds ``x[:, :, i, j] @ weight[:, :, ki, kj]`` at output position
    ``(i * stride + ki * dilation, j * stride + kj * dilation)``; then ``padding`` rows/columns
    are cropped from each border. Where stamps overlap unevenly the output shows a
    checkerboard. The loop runs over kernel taps: each tap writes one strided slice.
    """
    stride, padding, dilation = _conv_geometry(x, weight, bias, stride, padding, dilation, 0)
    output_padding = as_pair(output_padding, "output_padding", 0)
    for a in range(2):
        if output_padding[a] >= max(stride[a], dilation[a]):
            raise ValueError(
                f"output_padding {output_padding} must be smaller than stride {stride} or "
                f"dilation {dilation}"
            )
    batch, _, height, width = x.shape
    _, out_channels, kernel_h, kernel_w = weight.shape
    full_h = (height - 1) * stride[0] + dilation[0] * (kernel_h - 1) + 1
    full_w = (width - 1) * stride[1] + dilation[1] * (kernel_w - 1) + 1
    out_h = full_h - 2 * padding[0] + output_padding[0]
    out_w = full_w - 2 * padding[1] + output_padding[1]
    if min(out_h, out_w) < 1:
        raise ValueError(f"padding {padding} crops away the whole output ({full_h}x{full_w})")
    # output_padding adds rows at the bottom/right that no stamp reaches when it exceeds padding
    full = x.new_zeros(batch, out_channels, full_h + output_padding[0],
                       full_w + output_padding[1])
    for ki in range(kernel_h):
        for kj in range(kernel_w):
            # (N, C_in, H, W) x (C_in, C_out) -> (N, C_out, H, W): this tap of every stamp
            stamp = torch.einsum("nihw,io->nohw", x, weight[:, :, ki, kj])
            top, left = ki * dilation[0], kj * dilation[1]
            full[
                :,
                :,
                top : top + stride[0] * (height - 1) + 1 : stride[0],
                left : left + stride[1] * (width - 1) + 1 : stride[1],
            ] += stamp
    out = full[:, :, padding[0] : padding[0] + out_h, padding[1] : padding[1] + out_w]
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


# ----------------------------------------------------------------------------------------------
# Classic kernels

def box_kernel(size: int = 3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(size, size)`` moving average: every weight ``1 / size**2``."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return torch.full((size, size), 1.0 / size**2, dtype=dtype)


def gaussian_kernel_1d(sigma: float, radius: int | None = None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sampled Gaussian of standard deviation ``sigma`` (pixels), length ``2*radius+1``, sum 1.

    ``radius`` defaults to ``ceil(3 * sigma)``, which keeps 99.7 % of the mass.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = math.ceil(3 * sigma) if radius is None else radius
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype)


def gaussian_kernel(sigma: float, radius: int | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """2-D Gaussian ``(2r+1, 2r+1)``: the outer product of two 1-D Gaussians (separable)."""
    column = gaussian_kernel_1d(sigma, radius, dtype)
    return torch.outer(column, column)


SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL_Y = SOBEL_X.T.contiguous()
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
SHARPEN = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])
IDENTITY = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])


def classic_kernels() -> dict[str, torch.Tensor]:
    """Named 3x3 kernels: identity, box blur, Gaussian blur, sharpen, Sobel x/y, Laplacian."""
    return {
        "identity": IDENTITY.clone(),
        "box blur": box_kernel(3),
        "gaussian blur": torch.outer(*(2 * [torch.tensor([1.0, 2.0, 1.0]) / 4])),
        "sharpen": SHARPEN.clone(),
        "sobel x": SOBEL_X.clone(),
        "sobel y": SOBEL_Y.clone(),
        "laplacian": LAPLACIAN.clone(),
    }


def filter_image(x: torch.Tensor, kernel: torch.Tensor, padding_mode: str = "reflect"
                 ) -> torch.Tensor:
    """Apply one 2-D ``kernel (k, k)`` to every channel of ``x (N, C, H, W)`` separately.

    The image is padded by ``k // 2`` with ``padding_mode`` ("reflect", "replicate",
    "circular" or "zeros") so the result keeps the size ``(N, C, H, W)``; reflecting the border
    avoids the dark frame zero padding gives a blur. Odd kernel sizes only.
    """
    check_image(x)
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(f"kernel must be 2-D with odd sizes, got {tuple(kernel.shape)}")
    pad_h, pad_w = kernel.shape[0] // 2, kernel.shape[1] // 2
    batch, channels, height, width = x.shape
    # Channels become batch entries, so a single-channel kernel filters each of them alone.
    planes = x.reshape(batch * channels, 1, height, width)
    if padding_mode == "zeros":
        planes = F.pad(planes, (pad_w, pad_w, pad_h, pad_h))
    elif padding_mode in ("reflect", "replicate", "circular"):
        planes = F.pad(planes, (pad_w, pad_w, pad_h, pad_h), mode=padding_mode)
    else:
        raise ValueError(f"unknown padding_mode {padding_mode!r}")
    weight = kernel.to(x.dtype)[None, None]
    return F.conv2d(planes, weight).reshape(batch, channels, height, width)


def separate(kernel: torch.Tensor, tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a rank-1 kernel ``(kH, kW)`` into ``column (kH,)`` and ``row (kW,)``.

    ``torch.outer(column, row)`` equals the kernel; filtering with the column then the row
    costs ``kH + kW`` multiplications per pixel instead of ``kH * kW``. The split is the leading
    singular pair; a kernel whose second singular value exceeds ``tol`` times the first is not
    separable and raises ``ValueError``.
    """
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D, got shape {tuple(kernel.shape)}")
    u, s, vh = torch.linalg.svd(kernel.double())
    if s[0] == 0 or (len(s) > 1 and s[1] > tol * s[0]):
        raise ValueError(
            f"kernel is not separable: singular values {s.tolist()} (rank > 1)"
        )
    scale = s[0].sqrt()
    column, row = u[:, 0] * scale, vh[0] * scale
    if column.sum() < 0:  # a sign convention so a blur splits into two positive blurs
        column, row = -column, -row
    return column.to(kernel.dtype), row.to(kernel.dtype)


def filter_separable(x: torch.Tensor, column: torch.Tensor, row: torch.Tensor,
                     padding_mode: str = "reflect") -> torch.Tensor:
    """Filter ``x (N, C, H, W)`` with ``outer(column, row)`` as two 1-D passes (same size out)."""
    vertical = filter_image(x, column.reshape(-1, 1), padding_mode)
    return filter_image(vertical, row.reshape(1, -1), padding_mode)


# ----------------------------------------------------------------------------------------------
# The block DCT as a convolution (JPEG's transform)

def dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``(n, n)``, float64: row ``k`` is the ``k``-th cosine.

    ``D[k, i] = a_k cos(pi * (2i + 1) * k / (2n))`` with ``a_0 = sqrt(1/n)``, else
    ``sqrt(2/n)``; ``D @ block @ D.T`` equals ``scipy.fft.dctn(block, norm="ortho")``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    matrix[0] /= math.sqrt(2.0)
    return matrix


def dct_kernels(n: int = 8, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``n*n`` DCT basis images as conv kernels ``(n*n, 1, n, n)``.

    Kernel ``u * n + v`` is ``outer(D[u], D[v])``: vertical frequency ``u``, horizontal ``v``;
    kernel 0 is the flat (DC) one.
    """
    matrix = dct_matrix(n)
    basis = matrix[:, None, :, None] * matrix[None, :, None, :]  # (u, v, i, j)
    return basis.reshape(n * n, 1, n, n).to(dtype)


def _check_blocks(x: torch.Tensor, n: int, name: str) -> None:
    check_image(x, name)
    height, width = x.shape[-2:]
    if height % n or width % n:
        raise ValueError(
            f"{name} is {height}x{width}, not a multiple of the {n}x{n} block: pad it first "
            f"(course_lib.images.pad_to_multiple(x, {n}))"
        )


def block_dct(x: torch.Tensor, n: int = 8) -> torch.Tensor:
    """DCT-II of every non-overlapping ``n x n`` block: a stride-``n`` convolution.

    ``x (N, 1, H, W)`` with ``H, W`` multiples of ``n`` -> ``(N, n*n, H/n, W/n)``. Channel
    ``u * n + v`` holds frequency ``(u, v)`` of each block, so an ``(n, n)`` table (e.g. a JPEG
    quantisation table ``Q``) broadcasts as ``Q.reshape(1, n*n, 1, 1)``. Orthonormal: energy
    is preserved and :func:`block_idct` inverts it exactly.
    """
    _check_blocks(x, n, "x")
    if x.shape[1] != 1:
        raise ValueError(
            f"block_dct takes one channel (N, 1, H, W), got {x.shape[1]}: transform each "
            "channel separately, e.g. x.reshape(N * C, 1, H, W)"
        )
    return conv2d_unfold(x, dct_kernels(n, x.dtype), stride=n)


def block_idct(coefficients: torch.Tensor, n: int = 8) -> torch.Tensor:
    """Inverse of :func:`block_dct`: a stride-``n`` transposed convolution with the same kernels.

    ``coefficients (N, n*n, h, w)`` -> ``(N, 1, h*n, w*n)``: each block is the sum of the 64
    basis images weighted by its coefficients (the basis is orthonormal, so its transpose is
    its inverse).
    """
    check_image(coefficients, "coefficients")
    if coefficients.shape[1] != n * n:
        raise ValueError(f"coefficients must have {n * n} channels, got {coefficients.shape[1]}")
    return conv_transpose2d(coefficients, dct_kernels(n, coefficients.dtype), stride=n)


def energy_compaction(coefficients: torch.Tensor) -> torch.Tensor:
    """Share of the energy kept by the ``k`` largest coefficients of each block, k = 1..K.

    ``coefficients (N, K, h, w)`` (one block per position, e.g. from :func:`block_dct`) ->
    ``(K,)`` float64, increasing to 1: entry ``k - 1`` is the sum over all blocks of their
    ``k`` largest squared coefficients divided by the total energy.
    """
    check_image(coefficients, "coefficients")
    energy = coefficients.double().pow(2).transpose(0, 1).reshape(coefficients.shape[1], -1)
    ranked, _ = energy.sort(dim=0, descending=True)  # per block, largest first
    total = energy.sum()
    if total == 0:
        raise ValueError("all coefficients are zero: the energy share is undefined")
    return ranked.sum(dim=1).cumsum(0) / total
