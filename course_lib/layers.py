"""Layers of the learned codec: GDN / inverse GDN and the bounds they need, and a transposed
convolution that sums in a fixed order.

GDN (Ballé, Laparra & Simoncelli 2016) is the normalisation of the codec's analysis
transform::

    y_i = x_i / sqrt(beta_i + sum_j gamma_ij * x_j**2)

and inverse GDN (IGDN) multiplies by the same root in the synthesis transform. ``beta`` must
stay positive and ``gamma`` non-negative while an optimiser moves them freely, so they are
stored reparametrised (:class:`NonNegativeParametrizer`), as in TensorFlow Compression and
CompressAI.

The sums of these layers come out in the same order whatever the number of threads and the
size of the input (on a given CPU), so that a file decodes to the same pixels with any thread
count and a big image decoded tile by tile equals the image decoded whole (see
:mod:`course_lib.codecs.learned`). The libraries under PyTorch do not promise that by
themselves, so the layers choose their computations by measurement:

* GDN's sum over channels is a matrix product ``(positions, channels) @ gamma^T``: the same
  sums for any thread count from 16 positions up (a GDN in the codec sees at least 64). As a
  1 x 1 ``F.conv2d`` it is computed by one backend with one thread and by another with more.
  At inference on one image it is ``gamma @ (channels, positions)`` (``torch.addmm``), which
  gives exactly the same numbers with 1 to 8 threads (measured, and tested against the other
  form) and reads and writes the image fewer times;
* a transposed convolution is an ordinary convolution and a pixel shuffle
  (:class:`SubpixelConvTranspose2d`): oneDNN's own transposed convolution sums in an order that
  changes with the thread count; its ordinary convolution does not, at any input size, when
  :func:`conv2d_fixed_order` hands it every input (``F.conv2d`` would send a small input with a
  3 x 3 kernel to another backend).
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


def conv2d_fixed_order(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` (no padding, stride 1), summed in the same order for any
    input size and thread count at inference on the CPU in float32, where oneDNN computes it
    (``x.to_mkldnn()``). Elsewhere (training, autocast, float64, GPUs) plain ``F.conv2d``."""
    if (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available()):
        return F.conv2d(x.to_mkldnn(), weight, bias).to_dense()
    return F.conv2d(x, weight, bias)


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
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma)
        if not torch.is_grad_enabled() and x.dim() == 4 and x.shape[0] == 1:
            # inference on one image: gamma @ (channels, positions), the same sums as below
            # (see the module docstring) in fewer passes over memory, the result written over
            # the squares
            flat = x.reshape(x.shape[1], -1)
            squares = flat * flat
            norm = torch.addmm(beta[:, None], gamma, squares).sqrt_()
            out = (torch.mul(flat, norm, out=squares) if self.inverse
                   else torch.div(flat, norm, out=squares))
            return out.view(x.shape)
        # sum_j gamma_ij x_j**2 as (positions, channels) @ gamma^T: see the module docstring
        norm = torch.matmul((x * x).flatten(2).transpose(1, 2), gamma.t())
        norm = norm.add_(beta).sqrt_().transpose(1, 2).reshape(x.shape)  # in place: less memory
        return x * norm if self.inverse else x / norm


def conv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2):
    """'Same'-padded convolution that divides H and W by ``stride``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2)


class SubpixelConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same parameters, same state dict, the same result up to float
    rounding) computed as one ordinary convolution and a pixel shuffle (Shi et al. 2016).

    Output pixel ``o = stride * q + r`` (``r`` its phase, ``0 <= r < stride``) receives input
    pixel ``i`` through tap ``t = r + padding - stride * (i - q)`` of the kernel, so each
    phase is an ordinary convolution over the inputs ``i - q`` of a small window, with the
    taps of that phase. One convolution computes all ``stride**2`` phases as channels, and
    :func:`torch.nn.functional.pixel_shuffle` puts them in place. Needs an output exactly
    ``stride`` times the input (``kernel + output_padding - 2 * padding == stride``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int, output_padding: int):
        if kernel_size + output_padding - 2 * padding != stride:
            raise ValueError("a sub-pixel transposed convolution needs kernel_size + "
                             "output_padding - 2 * padding == stride (output = stride x input)")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding,
                         output_padding)
        # the offsets i - q that some phase reads: window_low .. window_high
        self.window_low = -((kernel_size - 1 - padding) // stride)
        self.window_high = (stride - 1 + padding) // stride
        self._phase_cache = None  # (key, phase weight, bias) at inference: see forward

    def phase_weight(self) -> torch.Tensor:
        """(out * stride**2, in, window, window): the kernels of all phases, in
        :func:`~torch.nn.functional.pixel_shuffle`'s channel order."""
        kernel, stride, padding = self.kernel_size[0], self.stride[0], self.padding[0]
        offsets = torch.arange(self.window_low, self.window_high + 1, device=self.weight.device)
        taps = torch.arange(stride, device=offsets.device)[:, None] + padding - stride * offsets
        taps = taps.masked_fill((taps < 0) | (taps >= kernel), kernel)  # -> an added zero tap
        weight = F.pad(self.weight, (0, 1, 0, 1))
        kernels = weight[:, :, taps[:, None, :, None], taps[None, :, None, :]]
        # (in, out, row phase, column phase, window, window) -> (out x phases, in, window...)
        window = len(offsets)
        return kernels.permute(1, 2, 3, 0, 4, 5).reshape(-1, self.in_channels, window, window)

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None:
            raise ValueError("the output size is always stride x the input size")
        stride = self.stride[0]
        window = (-self.window_low, self.window_high) * 2  # F.pad: left, right, top, bottom
        weight, bias = self._phase_parameters()
        phases = conv2d_fixed_order(F.pad(x, window), weight, bias)
        return F.pixel_shuffle(phases, stride)

    def _phase_parameters(self):
        """The phase kernels and bias; without autograd they are kept until a parameter
        changes (``load_state_dict``, ``.to()`` or an optimiser step all bump its version)."""
        def computed():
            stride = self.stride[0]
            bias = None if self.bias is None else self.bias.repeat_interleave(stride * stride)
            return self.phase_weight(), bias

        if torch.is_grad_enabled():
            self._phase_cache = None
            return computed()
        parameters = [self.weight] + ([] if self.bias is None else [self.bias])
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in parameters)
        if self._phase_cache is None or self._phase_cache[0] != key:
            self._phase_cache = (key, *computed())
        return self._phase_cache[1:]


def deconv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2):
    """Transposed convolution that multiplies H and W by ``stride`` exactly."""
    return SubpixelConvTranspose2d(in_channels, out_channels, kernel_size, stride,
                                   padding=kernel_size // 2, output_padding=stride - 1)
