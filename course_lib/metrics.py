"""Image quality and rate metrics, in torch (differentiable and batched).

Images are float tensors ``(N, C, H, W)`` with values in ``[0, data_range]``; functions return
one value per image with ``reduction="none"`` and the mean over the batch with ``"mean"``
(the default), which is how CompressAI and the course's benchmark report curves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .conv import gaussian_kernel_1d

# Wang, Simoncelli & Bovik (2003): relative importance of the five MS-SSIM scales.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) tensors, got shape {tuple(x.shape)}; "
                         "use course_lib.images.to_tensor for arrays")


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be 'mean' or 'none', not {reduction!r}")


def quantize_8bit(x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Round to the 256 levels a PNG can store, as writing the image to a file would."""
    levels = x.clamp(0, data_range) * (255.0 / data_range)
    return torch.round(levels) / 255.0 * data_range


def mse(x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error per image."""
    _check_pair(x, y)
    return _reduce(((x - y) ** 2).flatten(1).mean(dim=1), reduction)


def psnr(
    reference: torch.Tensor,
    reconstruction: torch.Tensor,
    data_range: float = 1.0,
    round_8bit: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range² / MSE)``, per image.

    By default the reconstruction is first rounded and clipped to 8 bits, so the number is the
    one a decoded file gives. Identical images give ``inf`` (not an error). With
    ``reduction="mean"`` the per-image PSNRs are averaged (the convention for a test set).
    """
    _check_pair(reference, reconstruction)
    if round_8bit:
        reconstruction = quantize_8bit(reconstruction, data_range)
    error = mse(reference, reconstruction, reduction="none")
    peak = torch.full_like(error, data_range**2)
    value = torch.where(error > 0, 10 * torch.log10(peak / error.clamp_min(1e-30)),
                        torch.full_like(error, math.inf))
    return _reduce(value, reduction)


def _window(size: int, sigma: float) -> torch.Tensor:
    """The 1-D Gaussian of ``size`` taps (odd) used by SSIM, float64."""
    if size % 2 == 0:
        raise ValueError(f"window_size must be odd, got {size}")
    return gaussian_kernel_1d(sigma, radius=size // 2, dtype=torch.float64)


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter applied to every channel independently."""
    channels = x.shape[1]
    taps = window.to(x.dtype).to(x.device)
    horizontal = taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    return F.conv2d(F.conv2d(x, horizontal, groups=channels), vertical, groups=channels)


def _ssim_and_contrast(x, y, data_range, window, k1=0.01, k2=0.03):
    """Per-image, per-channel SSIM and contrast-structure terms, each ``(N, C)``."""
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x**2
    var_y = _blur(y * y, window) - mu_y**2
    cov_xy = _blur(x * y, window) - mu_x * mu_y
    contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * contrast_structure).mean(dim=(2, 3)), contrast_structure.mean(dim=(2, 3))


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with an 11-tap Gaussian window, σ = 1.5.

    Statistics are taken only where the window fits inside the image and averaged over
    positions and channels; this equals ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1)``.
    """
    _check_pair(x, y)
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"images must be at least {window_size}x{window_size} for SSIM")
    per_channel, _ = _ssim_and_contrast(x, y, data_range, _window(window_size, sigma))
    return _reduce(per_channel.mean(dim=1), reduction)


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    weights=MS_SSIM_WEIGHTS,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003), five scales by default.

    Contrast-structure terms at the finer scales and full SSIM at the coarsest, combined as a
    weighted geometric mean; between scales the images are halved by 2x2 average pooling.
    Negative terms are clipped at zero so the power stays real. Same algorithm and constants
    as ``pytorch_msssim.ms_ssim``. Needs a shorter side above ``(window_size-1) * 2**(S-1)``
    (160 px for the defaults).
    """
    _check_pair(x, y)
    scales = len(weights)
    minimum = (window_size - 1) * 2 ** (scales - 1)
    if min(x.shape[-2:]) <= minimum:
        raise ValueError(f"MS-SSIM with {scales} scales needs images larger than {minimum} px "
                         f"on the shorter side, got {tuple(x.shape[-2:])}")
    window = _window(window_size, sigma)
    weights_t = torch.tensor(weights, dtype=x.dtype, device=x.device)
    terms = []
    for scale in range(scales):
        ssim_map, contrast = _ssim_and_contrast(x, y, data_range, window)
        if scale < scales - 1:
            terms.append(torch.relu(contrast))
            padding = [size % 2 for size in x.shape[-2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    terms.append(torch.relu(ssim_map))
    stacked = torch.stack(terms, dim=0)  # (scales, N, C)
    per_channel = torch.prod(stacked ** weights_t.view(-1, 1, 1), dim=0)
    return _reduce(per_channel.mean(dim=1), reduction)


def bpp(num_bytes: int, height: int, width: int) -> float:
    """Bits per pixel of a file of ``num_bytes`` bytes for an ``height x width`` image."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return 8.0 * num_bytes / (height * width)


def compression_ratio(num_bytes: int, height: int, width: int, channels: int = 3) -> float:
    """Raw 8-bit size divided by the compressed size (e.g. 24 bpp / 1 bpp = 24:1)."""
    if num_bytes <= 0:
        raise ValueError("compressed size must be positive")
    return height * width * channels / num_bytes
