"""Layers of the learned codec: GDN / inverse GDN and the bounds they need.

GDN (Ballé, Laparra & Simoncelli 2016) is the normalisation of the codec's analysis
transform::

    y_i = x_i / sqrt(beta_i + sum_j gamma_ij * x_j**2)

and inverse GDN (IGDN) multiplies by the same root in the synthesis transform. ``beta`` must
stay positive and ``gamma`` non-negative while an optimiser moves them freely, so they are
stored reparametrised (:class:`NonNegativeParametrizer`), as in TensorFlow Compression and
CompressAI.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _LowerBoundFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, bound):
        ctx.save_for_backward(inputs, bound)
        return torch.max(inputs, bound)

    @staticmethod
    def backward(ctx, grad_output):
        inputs, bound = ctx.saved_tensors
        # Let the gradient through where it would push the input back above the bound, so a
        # parameter stuck at the bound can still move up.
        pass_through = (inputs >= bound) | (grad_output < 0)
        return pass_through.type_as(grad_output) * grad_output, None


def lower_bound(inputs: torch.Tensor, bound: float) -> torch.Tensor:
    """``max(inputs, bound)`` whose gradient also flows below the bound when it points up."""
    return _LowerBoundFunction.apply(inputs, torch.tensor(bound, dtype=inputs.dtype,
                                                          device=inputs.device))


class NonNegativeParametrizer(nn.Module):
    """Stores ``v >= minimum`` as ``sqrt(v + pedestal)``; reading squares it back.

    The square root keeps gradient steps well scaled near zero; the pedestal keeps the
    derivative finite at zero.
    """

    def __init__(self, minimum: float = 0.0, reparam_offset: float = 2**-18):
        super().__init__()
        self.pedestal = reparam_offset**2
        self.bound = (minimum + self.pedestal) ** 0.5

    def init(self, value: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.clamp(value + self.pedestal, min=self.pedestal))

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return lower_bound(stored, self.bound) ** 2 - self.pedestal


class GDN(nn.Module):
    """Generalised divisive normalisation over channels; ``inverse=True`` gives IGDN.

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``. ``beta`` starts at 1 and ``gamma`` at
    ``0.1 * I`` (each channel normalised by itself), the usual initialisation.
    """

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6,
                 gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        self.beta_reparam = NonNegativeParametrizer(minimum=beta_min)
        self.gamma_reparam = NonNegativeParametrizer()
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(channels)))
        self.gamma = nn.Parameter(self.gamma_reparam.init(gamma_init * torch.eye(channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).view(channels, channels, 1, 1)
        norm = torch.sqrt(F.conv2d(x * x, gamma, beta))
        return x * norm if self.inverse else x / norm


def conv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2):
    """'Same'-padded convolution that divides H and W by ``stride``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2)


def deconv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2):
    """Transposed convolution that multiplies H and W by ``stride`` exactly."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride,
                              padding=kernel_size // 2, output_padding=stride - 1)
