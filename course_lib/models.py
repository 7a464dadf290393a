"""Learned image codecs: factorized prior (Ballé et al. 2017/2018) and (mean–)scale
hyperprior (Ballé et al. 2018, Minnen et al. 2018), structured like CompressAI's
``models/google.py``.

Transforms and entropy models are separate modules:

* ``g_a`` / ``g_s``: analysis and synthesis transforms (image <-> latents ``y``), each four
  stride-2 convolutions with GDN / IGDN, so ``y`` has 1/16 of the image's height and width;
* ``h_a`` / ``h_s``: hyper-analysis and hyper-synthesis (``y`` <-> side information ``z``,
  another factor 4 smaller), predicting each latent's Gaussian scale (and mean);
* ``entropy_bottleneck`` (factorized prior of ``z``, or of ``y`` in the factorized model) and
  ``gaussian_conditional``.

``forward(x)`` is for training: ``x (N, 3, H, W)`` in [0, 1] with H, W multiples of
:attr:`~CompressionModel.multiple` gives ``{"x_hat": (N, 3, H, W), "likelihoods": {...}}``.
``compress(x)`` / ``decompress(strings, shape)`` produce and read real bytes, one image at a
time; ``symbols(x)`` gives the integers ``compress`` codes and the table of each
(:class:`Symbols`), the one place they are derived.

Tiles: ``compress`` and ``decompress`` take ``tile``, a size in pixels, and then run the
transforms over one tile at a time (:func:`run_in_tiles`): ``g_a`` and ``g_s`` on tiles of the
latent grid, ``h_s`` on tiles of the grid of ``z``, each with a halo of context around it as
wide as half the transform's receptive field (:func:`course_lib.pooling.receptive_field`),
keeping the tile's interior only. The latents stay those of the whole image, and a tile's
interior is exactly what the whole image gives there, since the layers sum in an order that
does not depend on their input's size (:mod:`course_lib.layers`). Memory then grows with the
number of latents (a few bytes per pixel) and one tile's activations, not with the image's
activations (hundreds of bytes per pixel). ``h_a`` works on ``y`` at 1/16 of the image's
size and runs whole.

Determinism: the decoder must pick exactly the CDF table the encoder picked for every latent.
Those choices depend on the scales computed by ``h_s``, so both sides compute ``h_s`` on the
CPU in float64 from the integer-valued ``z_hat``; differences between thread counts, tile
shapes or devices (around 1e-15 relative) are then far too small to move a scale across one
of the table's boundaries (geometric midpoints between its scales, which are 13 % apart). The
pixels are then the same for any thread count and tile size on one kind of CPU, since the
layers of ``g_s`` sum in a fixed order (:mod:`course_lib.layers`; what remains is in
:mod:`course_lib.codecs.learned`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch
from torch import nn

from .entropy import fast
from .entropy_models import EntropyBottleneck, GaussianConditional, quantize
from .layers import GDN, conv, deconv
from .pooling import receptive_field


@dataclass
class Symbols:
    """The integers an encoder hands the entropy coder for one image, and the table of each:
    what :meth:`CompressionModel.compress` codes and the file holds (:meth:`~CompressionModel.
    symbols`).

    ``y``: int ``(1, M, h, w)``, the latents rounded around ``means``; ``y_indexes``: the CDF
    table of each (its channel for a factorized prior, its scale's index for a hyperprior);
    ``z`` and ``z_indexes``: the same for the side information ``(1, N, h/4, w/4)`` (None for a
    factorized prior); ``means``: float64 ``(1, M, h, w)``, what each ``y`` is coded around, so
    that the decoder's ``y_hat = y + means`` (the entropy bottleneck's medians for a factorized
    prior, 0 for the scale hyperprior), only when asked for (``means=True``).
    """

    y: np.ndarray
    y_indexes: np.ndarray
    z: np.ndarray | None = None
    z_indexes: np.ndarray | None = None
    means: np.ndarray | None = None


class ConvStack(nn.Sequential):
    """The layers of one transform (``g_a``, ``g_s``, ``h_a``, ``h_s``): an ``nn.Sequential``
    that can also compute just the interior of a tile (:func:`run_in_tiles`)."""

    def forward(self, x: torch.Tensor, margins: list[int] | None = None) -> torch.Tensor:
        """``x`` through the layers. With ``margins``, the pixels of ``x`` around a tile's
        interior (above, below, left, right), the context is cut after each layer down to what
        the layers left need (:func:`input_context`), so that upsampling layers do not compute
        a halo that grows with them, and the interior comes out."""
        if margins is None:
            return super().forward(x)
        layers = list(self)
        for index, layer in enumerate(layers):
            height = x.shape[-2]
            x = layer(x)
            context = input_context(layers[index + 1 :])
            margins = [margin * x.shape[-2] // height for margin in margins]  # rescaled
            cut = [max(margin - context, 0) for margin in margins]
            margins = [min(margin, context) for margin in margins]
            x = x[..., cut[0] : x.shape[-2] - cut[1], cut[2] : x.shape[-1] - cut[3]]
        return x


def analysis_transform(n: int, m: int) -> ConvStack:
    """(B, 3, H, W) -> (B, m, H/16, W/16)."""
    return ConvStack(conv(3, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m))


def synthesis_transform(n: int, m: int) -> ConvStack:
    """(B, m, h, w) -> (B, 3, 16h, 16w)."""
    return ConvStack(deconv(m, n), GDN(n, inverse=True), deconv(n, n), GDN(n, inverse=True),
                     deconv(n, n), GDN(n, inverse=True), deconv(n, 3))


def tile_spans(length: int, tile: int | None) -> list[tuple[int, int]]:
    """``0 .. length`` cut into the fewest spans of at most ``tile`` (None: one span), all of
    nearly the same length (no sliver at the end)."""
    count = 1 if tile is None else -(-length // tile)
    bounds = [length * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def tile_geometry(layers) -> tuple[int, int, bool]:
    """``(factor, halo, upsamples)`` of a stack of convolutions (an ``nn.Sequential`` or a list
    of layers): a cell of its coarse side is ``factor`` x ``factor`` pixels of its fine side;
    ``halo`` cells of context on each side of a tile hold every input that the tile's interior
    depends on; ``upsamples``: the coarse side is the input (a synthesis transform).

    A transposed convolution connects its input ``i`` and output ``o`` exactly as an ordinary
    convolution of the same kernel, stride and padding connects its output ``i`` and input
    ``o``, so a synthesis transform has the receptive field of its layers taken backwards.
    """
    convolutions = [m for layer in layers for m in layer.modules()
                    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    upsamples = any(isinstance(m, nn.ConvTranspose2d) for m in convolutions)
    geometry = [(m.kernel_size[0], m.stride[0], m.padding[0]) for m in convolutions]
    field = receptive_field(geometry[::-1] if upsamples else geometry)[-1]
    halo = math.ceil(((field.size - 1) / 2 + abs(field.start)) / field.jump)
    return field.jump, halo, upsamples


def input_context(layers) -> int:
    """Pixels of context that the input of ``layers`` needs on each side of a region for the
    output there to be exact: :func:`tile_geometry`'s halo in input pixels (0 if no layer is a
    convolution)."""
    if not any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
               for layer in layers for m in layer.modules()):
        return 0
    factor, halo, upsamples = tile_geometry(layers)
    return halo if upsamples else halo * factor


def run_in_tiles(transform: ConvStack, read, cells: tuple[int, int], tile: int | None):
    """Apply a convolutional ``transform`` to a big input a tile at a time; yield its output
    as ``(rows, cols, piece)``.

    The coarse side of the transform, ``cells = (rows, columns)`` of it, is cut into tiles of
    at most ``tile`` x ``tile`` cells (:func:`tile_spans`; None: one tile). Each tile is read
    with its halo (:func:`tile_geometry`), clipped at the edges of the grid (where the whole
    input has the same zero padding), and the transform computes its interior
    (:meth:`ConvStack.forward`): what the whole input gives there.

    ``read(rows, cols)`` returns the input ``(1, C, h, w)`` at these slices of its pixels;
    ``piece`` is the output at the slices ``rows``, ``cols`` of the output's pixels.
    """
    factor, halo, upsamples = tile_geometry(transform)
    into, out = (1, factor) if upsamples else (factor, 1)
    for top, bottom in tile_spans(cells[0], tile):
        for left, right in tile_spans(cells[1], tile):
            first_row, end_row = max(top - halo, 0), min(bottom + halo, cells[0])
            first_col, end_col = max(left - halo, 0), min(right + halo, cells[1])
            piece = transform(read(slice(first_row * into, end_row * into),
                                   slice(first_col * into, end_col * into)),
                              [(top - first_row) * into, (end_row - bottom) * into,
                               (left - first_col) * into, (end_col - right) * into])
            yield slice(top * out, bottom * out), slice(left * out, right * out), piece


def _tile_cells(tile: int | None, factor: int) -> int | None:
    """A tile of ``tile`` pixels in cells of ``factor`` pixels."""
    return None if tile is None else tile // factor


class CompressionModel(nn.Module):
    """Shared plumbing: auxiliary loss, table updates, decoder-side quantisation mode."""

    multiple = 16  # H and W of the input must be multiples of this

    def __init__(self):
        super().__init__()
        # How the decoder sees y during training: "noise" (Ballé) or "ste" (rounded, with a
        # straight-through gradient; Minnen & Singh 2020). The rate always uses noise.
        self.decoder_quantization = "noise"

    def gains(self, rate) -> tuple[torch.Tensor, torch.Tensor] | tuple[float, float]:
        """(gain, inverse gain) of rate ``rate``: 1.0 each for a single-rate model (see
        :meth:`ScaleHyperprior.gains`)."""
        _check_single_rate(rate)
        return 1.0, 1.0

    def aux_loss(self) -> torch.Tensor:
        """Sum of the entropy bottlenecks' quantile losses (optimised separately)."""
        return sum(m.loss() for m in self.modules() if isinstance(m, EntropyBottleneck))

    def update(self, force: bool = False) -> bool:
        """Rebuild stale CDF tables (coding and saving do this automatically)."""
        results = [m.update(force) for m in self.modules() if isinstance(m, EntropyBottleneck)]
        return any(results)

    def _decoder_input(self, y: torch.Tensor, y_noisy: torch.Tensor, offset) -> torch.Tensor:
        if self.training and self.decoder_quantization == "ste":
            return quantize(y, "ste", offset)
        return y_noisy

    def _check_input(self, x: torch.Tensor, one_image: bool = False) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) RGB tensors, got {tuple(x.shape)}")
        if one_image and x.shape[0] != 1:
            raise ValueError(f"compress codes one image at a time, got a batch of {x.shape[0]}")
        if x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise ValueError(f"H and W must be multiples of {self.multiple}, got "
                             f"{tuple(x.shape[-2:])}; pad with course_lib.images.pad_to_multiple")

    def check_tile(self, tile) -> None:
        """Refuse a ``tile`` that is neither None (no tiles) nor a positive multiple of
        :attr:`multiple` pixels."""
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, Integral)
                                 or tile < self.multiple or tile % self.multiple):
            raise ValueError(f"tile must be a whole number of pixels, a multiple of "
                             f"{self.multiple} (or None: no tiles), got {tile!r}")

    def _analysis_tiles(self, x: torch.Tensor, gain, tile: int | None) -> torch.Tensor:
        """``g_a(x) * gain``, (1, M, H/16, W/16) on the model's device, computed ``tile``
        pixels at a time. ``x``: (1, 3, H, W) floats in [0, 1], or uint8 0..255 converted a
        tile at a time (a big image in 8 bits takes a quarter of the memory of its floats)."""
        factor, _, _ = tile_geometry(self.g_a)
        device = next(self.parameters()).device
        y = torch.empty(1, self.m, x.shape[-2] // factor, x.shape[-1] // factor, device=device)

        def read(rows: slice, cols: slice) -> torch.Tensor:
            piece = x[..., rows, cols].to(device)
            return piece / 255.0 if piece.dtype == torch.uint8 else piece

        for rows, cols, piece in run_in_tiles(self.g_a, read, y.shape[-2:],
                                              _tile_cells(tile, factor)):
            y[..., rows, cols] = piece * gain
        return y

    @torch.no_grad()
    def _synthesis_tiles(self, y_hat: torch.Tensor, inverse_gain, tile: int | None):
        """Iterator over ``(rows, cols, piece)`` of ``x_hat = g_s(y_hat * inverse_gain)``
        clamped to [0, 1], on the CPU, computed ``tile`` pixels at a time."""
        factor, _, _ = tile_geometry(self.g_s)
        device = next(self.parameters()).device
        pieces = run_in_tiles(self.g_s,
                              lambda rows, cols: y_hat[..., rows, cols].to(device) * inverse_gain,
                              y_hat.shape[-2:], _tile_cells(tile, factor))
        for rows, cols, piece in pieces:
            yield rows, cols, piece.clamp(0, 1).cpu()

    @torch.no_grad()
    def decompress(self, strings: list[bytes], shape, rate=None, tile: int | None = None
                   ) -> torch.Tensor:
        """Bytes from :meth:`compress` -> ``x_hat`` (1, 3, H, W) in [0, 1], where (H, W) is
        ``shape`` x :attr:`multiple`. See :meth:`decompress_tiles`."""
        x_hat = torch.empty(1, 3, shape[0] * self.multiple, shape[1] * self.multiple)
        for rows, cols, piece in self.decompress_tiles(strings, shape, rate, tile):
            x_hat[..., rows, cols] = piece
        return x_hat


def _check_single_rate(rate) -> None:
    if rate not in (None, 0):
        raise ValueError("this model has a single rate; rate must be None or 0")


class FactorizedPrior(CompressionModel):
    """Ballé et al. (2018) "factorized prior": y is coded with a per-channel learned density."""

    def __init__(self, n: int = 128, m: int = 192):
        super().__init__()
        self.n, self.m = n, m
        self.g_a = analysis_transform(n, m)
        self.g_s = synthesis_transform(n, m)
        self.entropy_bottleneck = EntropyBottleneck(m)

    def analysis(self, x: torch.Tensor, rate=None):
        """The analysis transform in training form: ``x (N, 3, H, W)`` -> ``(y, None)`` (no
        side information; ``rate`` None or 0), as :meth:`ScaleHyperprior.analysis`."""
        _check_single_rate(rate)
        return self.g_a(x), None

    def forward(self, x: torch.Tensor) -> dict:
        self._check_input(x)
        y = self.g_a(x)
        y_noisy, y_likelihoods = self.entropy_bottleneck(y)
        medians = self.entropy_bottleneck.medians.view(1, -1, 1, 1)
        x_hat = self.g_s(self._decoder_input(y, y_noisy, medians))
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods}}

    @torch.no_grad()
    def symbols(self, x: torch.Tensor, rate=None, tile: int | None = None, *,
                means: bool = False) -> Symbols:
        """The integers :meth:`compress` codes for one image ``x`` (1, 3, H, W) and their
        tables (:class:`Symbols`: y only); ``x``, ``rate`` and ``tile`` as in :meth:`compress`.
        """
        _check_single_rate(rate)
        self._check_input(x, one_image=True)
        self.check_tile(tile)
        y = self._analysis_tiles(x, 1.0, tile)
        symbols, indexes = self.entropy_bottleneck.symbols(y)
        offsets = None
        if means:
            offsets = self.entropy_bottleneck.medians.detach().cpu().double().view(1, -1, 1, 1)
            offsets = offsets.expand(symbols.shape).numpy().copy()
        return Symbols(symbols, indexes, means=offsets)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, rate=None, tile: int | None = None) -> dict:
        """One image ``x`` (1, 3, H, W) -> ``{"strings": [y], "shape": y's (h, w)}``: its
        :meth:`symbols`, coded. ``x`` and ``tile`` as in :meth:`ScaleHyperprior.compress`;
        ``rate`` is accepted (None or 0) so the file container treats every model alike."""
        symbols = self.symbols(x, rate, tile)
        string = fast.encode_with_indexes(symbols.y, symbols.y_indexes,
                                          self.entropy_bottleneck.table())
        return {"strings": [string], "shape": tuple(symbols.y.shape[-2:])}

    @torch.no_grad()
    def decompress_tiles(self, strings: list[bytes], shape, rate=None, tile: int | None = None):
        """Decode the latents, then return an iterator over ``(rows, cols, x_hat piece)``,
        ``g_s`` computed ``tile`` pixels at a time (see :meth:`ScaleHyperprior.decompress_tiles`).
        """
        _check_single_rate(rate)
        if len(strings) != 1:
            raise ValueError("a factorized-prior stream has one part (y)")
        self.check_tile(tile)
        y_hat = self.entropy_bottleneck.decompress(strings[0], (1, self.m, *shape))
        return self._synthesis_tiles(y_hat, 1.0, tile)


class ScaleHyperprior(CompressionModel):
    """Ballé et al. (2018) scale hyperprior: side information z predicts each latent's scale.

    With ``num_rates > 1`` one model covers several rate points: each rate ``q`` has a learned
    per-channel gain applied to ``y`` before quantisation and its inverse after (the "gain
    units" of Cui et al. 2021). Larger gains mean finer quantisation, more bits, less error.
    Fractional rates interpolate the gains geometrically, so any rate in between is available.
    Methods take ``rate``: a number in ``[0, num_rates - 1]`` or, in training, a ``(B,)``
    tensor of integer rate indexes (one per image).
    """

    multiple = 64

    def __init__(self, n: int = 128, m: int = 192, num_rates: int = 1):
        super().__init__()
        self.n, self.m, self.num_rates = n, m, num_rates
        if num_rates > 1:
            # log-gains spread so the initial rates already differ (about 2x per step)
            spread = torch.linspace(-1.0, 1.0, num_rates).view(-1, 1) * (num_rates - 1) * 0.35
            self.log_gain = nn.Parameter(spread.repeat(1, m))
            self.log_inverse_gain = nn.Parameter(-spread.repeat(1, m))
        self.g_a = analysis_transform(n, m)
        self.g_s = synthesis_transform(n, m)
        self.h_a = ConvStack(conv(m, n, 3, 1), nn.ReLU(inplace=True), conv(n, n),
                             nn.ReLU(inplace=True), conv(n, n))
        self.h_s = ConvStack(deconv(n, n), nn.ReLU(inplace=True), deconv(n, n),
                             nn.ReLU(inplace=True), conv(n, m, 3, 1), nn.ReLU(inplace=True))
        self.entropy_bottleneck = EntropyBottleneck(n)
        self.gaussian_conditional = GaussianConditional()

    def _entropy_parameters(self, hyper: torch.Tensor):
        """Split h_s's output into (scales, means); means are None for the scale-only model."""
        return hyper, None

    def gains(self, rate) -> tuple[torch.Tensor, torch.Tensor] | tuple[float, float]:
        """(gain, inverse gain) of rate ``rate``, broadcastable to y: ``(1 or B, M, 1, 1)``, or
        1.0 each for a single-rate model. ``y`` is multiplied by the gain before quantisation,
        ``y_hat`` by the inverse gain before the synthesis transform."""
        if self.num_rates == 1:
            _check_single_rate(rate)
            return 1.0, 1.0
        if rate is None:
            raise ValueError(f"this model covers {self.num_rates} rates: pass rate=0.."
                             f"{self.num_rates - 1}")
        if isinstance(rate, torch.Tensor):
            index = rate.long().to(self.log_gain.device)
            return (self.log_gain[index].exp()[..., None, None],
                    self.log_inverse_gain[index].exp()[..., None, None])
        rate = float(rate)
        if not 0 <= rate <= self.num_rates - 1:
            raise ValueError(f"rate must lie in [0, {self.num_rates - 1}], got {rate}")
        low = min(int(rate), self.num_rates - 2)
        weight = rate - low
        def blend(table):
            return ((1 - weight) * table[low] + weight * table[low + 1]).exp().view(1, -1, 1, 1)
        return blend(self.log_gain), blend(self.log_inverse_gain)

    def h_s_float64(self) -> nn.Module:
        """``h_s`` in float64 on the CPU, where the tables are chosen. Made once and kept (out
        of the state dict) until one of ``h_s``'s parameters changes: loading weights, an
        optimiser step or an in-place edit bumps its version."""
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.h_s.parameters())
        cached = self.__dict__.get("_h_s_float64_cache")
        if cached is None or cached[0] != key:
            h_s = copy.deepcopy(self.h_s).to("cpu", torch.float64)
            cached = self.__dict__["_h_s_float64_cache"] = (key, h_s)
        return cached[1]

    def _hyper_synthesis_tiles(self, z_hat: torch.Tensor, tile: int | None):
        """Iterator over ``(rows, cols, scales, means)`` at y's positions: ``h_s(z_hat)`` on the
        CPU in float64 (the same table choices on every machine), ``tile`` pixels at a time."""
        h_s = self.h_s_float64()
        z_hat = z_hat.detach().to("cpu", torch.float64)
        pieces = run_in_tiles(h_s, lambda rows, cols: z_hat[..., rows, cols], z_hat.shape[-2:],
                              _tile_cells(tile, self.multiple))
        for rows, cols, hyper in pieces:
            yield rows, cols, *self._entropy_parameters(hyper)

    def scales_and_means(self, z_hat: torch.Tensor):
        """What the hyperprior predicts for y from ``z_hat`` in training form (float32, on the
        model's device): ``(scales, means)``, means None for the scale-only model. (The
        checkerboard model corrects these with its context; :meth:`symbols` gives the
        parameters the coder really uses.)"""
        return self._entropy_parameters(self.h_s(z_hat))

    def _hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        return self.h_a(torch.abs(y) if self._hyper_takes_abs else y)

    def analysis(self, x: torch.Tensor, rate=None):
        """The analysis transforms in training form: ``x (N, 3, H, W)`` -> ``(y, z)``, y
        multiplied by the rate's gain (:meth:`gains`), z = ``h_a`` of it (not yet rounded)."""
        gain, _ = self.gains(rate)
        y = self.g_a(x) * gain
        return y, self._hyper_analysis(y)

    def forward(self, x: torch.Tensor, rate=None) -> dict:
        self._check_input(x)
        y, z = self.analysis(x, rate)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self._entropy_parameters(self.h_s(z_hat))
        y_noisy, y_likelihoods = self.gaussian_conditional(y, scales, means)
        offset = means if means is not None else 0.0
        _, inverse_gain = self.gains(rate)
        x_hat = self.g_s(self._decoder_input(y, y_noisy, offset) * inverse_gain)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    _hyper_takes_abs = True  # the scale model only needs |y|

    def relaxed_terms(self, y: torch.Tensor, z: torch.Tensor, rate, relax) -> dict:
        """The rate–distortion terms of given latents ``y`` and ``z`` with the quantiser
        ``relax(values, offset)`` (e.g. a soft rounding, or hard rounding to evaluate what the
        file will cost): ``{"x_hat", "likelihoods"}`` as :meth:`forward` gives them."""
        z_hat = relax(z, self.entropy_bottleneck.medians.view(1, -1, 1, 1))
        scales, means = self._entropy_parameters(self.h_s(z_hat))
        y_hat = relax(y, means if means is not None else 0.0)
        _, inverse_gain = self.gains(rate)
        return {"x_hat": self.g_s(y_hat * inverse_gain),
                "likelihoods": {"y": self.gaussian_conditional.likelihood(y_hat, scales, means),
                                "z": self.entropy_bottleneck.likelihood(z_hat)}}

    def _start(self, x: torch.Tensor, rate, tile: int | None, latents) -> tuple:
        """(y, z) to code: the transforms' (``latents`` None) or given ones, e.g. refined by
        :func:`course_lib.refine.refine_latents`."""
        self._check_input(x, one_image=True)
        self.check_tile(tile)
        if latents is not None:
            y, z = (value.detach() for value in latents)
            return y, z
        gain, _ = self.gains(rate)
        y = self._analysis_tiles(x, gain, tile)
        return y, self._hyper_analysis(y)

    @torch.no_grad()
    def symbols(self, x: torch.Tensor, rate=None, tile: int | None = None,
                latents: tuple | None = None, *, means: bool = False) -> Symbols:
        """The integers :meth:`compress` codes for one image and the table of each
        (:class:`Symbols`), with the means they are coded around if ``means``; arguments as in
        :meth:`compress`. The one place the coded integers are derived: the codec, the
        notebooks and the widgets all read them here."""
        y, z = self._start(x, rate, tile, latents)
        z_symbols, z_indexes = self.entropy_bottleneck.symbols(z)
        z_hat = quantize(z, "round", self.entropy_bottleneck.medians.view(1, -1, 1, 1))
        conditional = self.gaussian_conditional
        symbols = np.empty(y.shape, dtype=np.int32)  # an image's latents are small integers
        indexes = np.empty(y.shape, dtype=conditional.index_dtype)
        offsets = np.zeros(y.shape) if means else None
        for rows, cols, scales, predicted in self._hyper_synthesis_tiles(z_hat, tile):
            indexes[..., rows, cols] = conditional.indexes(scales)
            symbols[..., rows, cols] = conditional.symbols(y[..., rows, cols].cpu().double(),
                                                           predicted).numpy()
            if means and predicted is not None:
                offsets[..., rows, cols] = predicted.numpy()
        return Symbols(symbols, indexes, z_symbols, z_indexes, offsets)

    def _code(self, symbols: Symbols, y_parts=None) -> list[bytes]:
        """The streams of :meth:`compress`: y (in the parts given by the boolean masks
        ``y_parts``, None: whole), then z."""
        table = self.gaussian_conditional.table()
        if y_parts is None:
            streams = [fast.encode_with_indexes(symbols.y, symbols.y_indexes, table)]
        else:
            streams = [fast.encode_with_indexes(symbols.y[..., part], symbols.y_indexes[..., part],
                                                table) for part in y_parts]
        return [*streams, fast.encode_with_indexes(symbols.z, symbols.z_indexes,
                                                   self.entropy_bottleneck.table())]

    def compress(self, x: torch.Tensor, rate=None, tile: int | None = None,
                 latents: tuple | None = None) -> dict:
        """One image ``x`` (1, 3, H, W) -> ``{"strings": [y, z], "shape": z's (h, w)}``.

        ``x``: floats in [0, 1], or uint8 0..255 (converted a tile at a time, for a big image).
        ``tile``: run the transforms ``tile`` x ``tile`` pixels at a time (a multiple of
        :attr:`multiple`; None: whole), for the same bytes with a fraction of the memory.
        ``latents``: ``(y, z)`` to code instead of the transforms' own (the encoder's search,
        :func:`course_lib.refine.refine_latents`); the decoder is the same.
        """
        symbols = self.symbols(x, rate, tile, latents)
        return {"strings": self._code(symbols), "shape": tuple(symbols.z.shape[-2:])}

    @torch.no_grad()
    def decompress_tiles(self, strings: list[bytes], shape, rate=None, tile: int | None = None):
        """Decode the latents of bytes from :meth:`compress`, then return an iterator over
        ``(rows, cols, piece)`` of ``x_hat`` in [0, 1], ``g_s`` computed ``tile`` pixels at a
        time: the way to decode an image whose float copy would not fit in memory. The latents
        are decoded at once (a few bytes per pixel): errors in the bytes are raised here.
        """
        if len(strings) != 2:
            raise ValueError("a hyperprior stream has two parts (y and z)")
        self.check_tile(tile)
        _, inverse_gain = self.gains(rate)
        z_hat = self.entropy_bottleneck.decompress(strings[1], (1, self.n, *shape))
        factor, _, _ = tile_geometry(self.h_s)
        y_shape = (1, self.m, shape[0] * factor, shape[1] * factor)
        conditional = self.gaussian_conditional
        indexes = np.empty(y_shape, dtype=conditional.index_dtype)
        y_hat = torch.zeros(y_shape, dtype=torch.float64)  # the means first
        for rows, cols, scales, means in self._hyper_synthesis_tiles(z_hat, tile):
            indexes[..., rows, cols] = conditional.indexes(scales)
            if means is not None:
                y_hat[..., rows, cols] = means
        symbols = fast.decode_with_indexes(strings[0], indexes, conditional.table())
        y_hat = y_hat.add_(torch.from_numpy(symbols)).float()
        return self._synthesis_tiles(y_hat, inverse_gain, tile)


class MeanScaleHyperprior(ScaleHyperprior):
    """Minnen et al. (2018) without context model: the hyperprior predicts means and scales."""

    _hyper_takes_abs = False

    def __init__(self, n: int = 128, m: int = 192, num_rates: int = 1):
        super().__init__(n, m, num_rates)
        self.h_a = ConvStack(conv(m, n, 3, 1), nn.LeakyReLU(inplace=True), conv(n, n),
                             nn.LeakyReLU(inplace=True), conv(n, n))
        self.h_s = ConvStack(deconv(n, m), nn.LeakyReLU(inplace=True), deconv(m, m * 3 // 2),
                             nn.LeakyReLU(inplace=True), conv(m * 3 // 2, 2 * m, 3, 1))

    def _entropy_parameters(self, hyper: torch.Tensor):
        scales, means = hyper.chunk(2, dim=1)
        return scales, means


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only the checkerboard's anchors around each position: kernel
    taps at an odd distance ``|dr| + |dc|`` from the centre (He et al. 2021). At a non-anchor
    position those are all anchors; the centre and the other non-anchors are masked out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5):
        super().__init__(in_channels, out_channels, kernel_size, 1, kernel_size // 2)
        rows, cols = torch.meshgrid(torch.arange(kernel_size), torch.arange(kernel_size),
                                    indexing="ij")
        mask = ((rows + cols - 2 * (kernel_size // 2)) % 2 == 1).to(self.weight.dtype)
        self.register_buffer("mask", mask.expand_as(self.weight).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask.to(self.weight.dtype), self.bias)


def anchor_mask(height: int, width: int) -> torch.Tensor:
    """(height, width) booleans, True at the checkerboard's anchors: ``(row + col)`` even."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return (rows + cols) % 2 == 0


class CheckerboardMeanScale(MeanScaleHyperprior):
    """The mean–scale hyperprior with a checkerboard context model (He et al. 2021).

    The latents are coded in two passes. The *anchors* (half of the positions, a checkerboard)
    get their means and scales from the hyperprior alone; the other half then also sees the
    decoded anchors around it, through a masked 5 x 5 convolution (:class:`MaskedConv2d`), and
    predicts its own means and scales better: neighbouring latents are correlated in ways the
    hyperprior, at 1/4 of y's resolution, cannot describe. Both passes are a few convolutions
    over the whole grid, so the decoder stays parallel (unlike Minnen et al.'s serial context
    model, one network call per latent).

    The entropy parameters are ``h_s``'s output plus a correction
    ``entropy_parameters(cat(h_s output, context))`` whose last layer starts at zero: a model
    made from a trained :class:`MeanScaleHyperprior` (:meth:`from_mean_scale`) starts exactly
    where that model was, and training only adds what the context is worth.
    The y stream is two streams, anchors then the rest.
    """

    def __init__(self, n: int = 128, m: int = 192, num_rates: int = 1):
        super().__init__(n, m, num_rates)
        self.context_prediction = MaskedConv2d(m, 2 * m, 5)
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(4 * m, 3 * m, 1), nn.LeakyReLU(inplace=True), nn.Conv2d(3 * m, 2 * m, 1))
        nn.init.zeros_(self.entropy_parameters[-1].weight)
        nn.init.zeros_(self.entropy_parameters[-1].bias)

    @classmethod
    def from_mean_scale(cls, state_dict: dict, n: int, m: int, num_rates: int = 1):
        """This model with the transforms and hyperprior of a trained mean–scale model."""
        model = cls(n, m, num_rates)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        new = ("context_prediction.", "entropy_parameters.")
        if unexpected or any(not key.startswith(new) for key in missing):
            raise ValueError(f"not a mean-scale hyperprior's state: missing {missing}, "
                             f"unexpected {unexpected}")
        return model

    def _parameters_with_context(self, hyper: torch.Tensor, context: torch.Tensor | None):
        """(scales, means) from ``h_s``'s output and the anchors' context (None: anchors)."""
        if context is None:
            context = torch.zeros_like(hyper)
        correction = self.entropy_parameters(torch.cat([hyper, context], dim=1))
        return (hyper + correction).chunk(2, dim=1)

    def _two_passes(self, hyper: torch.Tensor, y: torch.Tensor, round_anchors):
        """The checkerboard's two passes in training form (convolutions over the whole grid):
        ``(anchors, scales, means, y_anchors)``, the anchors quantised by
        ``round_anchors(values, means)`` and zero elsewhere."""
        anchors = anchor_mask(*y.shape[-2:]).to(y.device)
        scales_a, means_a = self._parameters_with_context(hyper, None)
        y_anchors = round_anchors(y, means_a) * anchors
        context = self.context_prediction(y_anchors)
        scales_n, means_n = self._parameters_with_context(hyper, context)
        return (anchors, torch.where(anchors, scales_a, scales_n),
                torch.where(anchors, means_a, means_n), y_anchors)

    def forward(self, x: torch.Tensor, rate=None) -> dict:
        self._check_input(x)
        y, z = self.analysis(x, rate)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        # the anchors as the decoder has them (rounded around their means)
        _, scales, means, _ = self._two_passes(self.h_s(z_hat), y,
                                               lambda v, o: quantize(v, "ste", o))
        y_noisy, y_likelihoods = self.gaussian_conditional(y, scales, means)
        _, inverse_gain = self.gains(rate)
        x_hat = self.g_s(self._decoder_input(y, y_noisy, means) * inverse_gain)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def relaxed_terms(self, y: torch.Tensor, z: torch.Tensor, rate, relax) -> dict:
        """As :meth:`ScaleHyperprior.relaxed_terms`, in the checkerboard's two passes."""
        z_hat = relax(z, self.entropy_bottleneck.medians.view(1, -1, 1, 1))
        anchors, scales, means, y_anchors = self._two_passes(self.h_s(z_hat), y, relax)
        y_hat = torch.where(anchors, y_anchors, relax(y, means))
        _, inverse_gain = self.gains(rate)
        return {"x_hat": self.g_s(y_hat * inverse_gain),
                "likelihoods": {"y": self.gaussian_conditional.likelihood(y_hat, scales, means),
                                "z": self.entropy_bottleneck.likelihood(z_hat)}}

    def _hyper_whole(self, z_hat: torch.Tensor, tile: int | None) -> torch.Tensor:
        """``h_s(z_hat)`` for the whole grid, float64 on the CPU, computed in tiles."""
        factor, _, _ = tile_geometry(self.h_s)
        hyper = torch.empty(1, 2 * self.m, z_hat.shape[-2] * factor, z_hat.shape[-1] * factor,
                            dtype=torch.float64)
        h_s = self.h_s_float64()
        z_hat = z_hat.detach().to("cpu", torch.float64)
        for rows, cols, piece in run_in_tiles(h_s, lambda r, c: z_hat[..., r, c],
                                              z_hat.shape[-2:], _tile_cells(tile, self.multiple)):
            hyper[..., rows, cols] = piece
        return hyper

    def _pass_parameters(self, hyper: torch.Tensor, y_anchors: torch.Tensor | None,
                         part: torch.Tensor):
        """(scales, means) at the positions ``part`` (a (h, w) mask) in row-major order, each
        ``(1, M, count)``: the anchors' pass (``y_anchors`` None) or the others' (the decoded
        anchors, zero elsewhere). Float64 on the CPU, as matrix products over bands of rows
        (the memory of a band's context stays small), with the masked convolution's anchor
        taps only and only at the positions of the pass."""
        m, (height, width) = self.m, hyper.shape[-2:]
        conv = self.context_prediction
        taps = conv.mask[0, 0].flatten().nonzero().flatten()
        size, halo = conv.kernel_size[0], conv.kernel_size[0] // 2
        context_weight = conv.weight.detach().double().flatten(2)[:, :, taps].flatten(1)
        first, second = self.entropy_parameters[0], self.entropy_parameters[-1]
        w1, b1 = first.weight.detach().double().flatten(1), first.bias.detach().double()
        w2, b2 = second.weight.detach().double().flatten(1), second.bias.detach().double()
        slope = self.entropy_parameters[1].negative_slope
        band = max(1, 4096 // width)
        outputs = []
        for top in range(0, height, band):
            bottom = min(top + band, height)
            where = part[top:bottom].flatten().nonzero().flatten()
            piece = hyper[0, :, top:bottom].flatten(1)[:, where]  # (2M, count)
            if y_anchors is None:
                context = torch.zeros_like(piece)
            else:
                rows = y_anchors[0, :, max(top - halo, 0) : min(bottom + halo, height)]
                rows = torch.nn.functional.pad(
                    rows, (halo, halo, halo - (top - max(top - halo, 0)),
                           halo - (min(bottom + halo, height) - bottom)))
                patches = torch.nn.functional.unfold(rows[None], size)  # (1, M * size², n)
                patches = patches.view(m, size * size, -1)[:, taps][..., where].flatten(0, 1)
                context = context_weight @ patches + conv.bias.detach().double()[:, None]
            hidden = torch.nn.functional.leaky_relu(w1 @ torch.cat([piece, context]) +
                                                    b1[:, None], slope)
            outputs.append(piece + w2 @ hidden + b2[:, None])
        scales, means = torch.cat(outputs, dim=1)[None].chunk(2, dim=1)
        return scales, means

    @torch.no_grad()
    def symbols(self, x: torch.Tensor, rate=None, tile: int | None = None,
                latents: tuple | None = None, *, means: bool = False) -> Symbols:
        """As :meth:`ScaleHyperprior.symbols`, the parameters of each latent from the
        checkerboard's two passes."""
        y, z = self._start(x, rate, tile, latents)
        z_symbols, z_indexes = self.entropy_bottleneck.symbols(z)
        z_hat = quantize(z, "round", self.entropy_bottleneck.medians.view(1, -1, 1, 1))
        hyper = self._hyper_whole(z_hat, tile)
        y = y.cpu().double()
        anchors = anchor_mask(*y.shape[-2:])
        conditional = self.gaussian_conditional
        symbols = np.empty(y.shape, dtype=np.int32)
        indexes = np.empty(y.shape, dtype=conditional.index_dtype)
        offsets = np.zeros(y.shape) if means else None
        y_anchors = torch.zeros_like(y)
        for part, context in ((anchors, None), (~anchors, y_anchors)):
            scales, predicted = self._pass_parameters(hyper, context, part)
            values = conditional.symbols(y[..., part], predicted)
            symbols[..., part.numpy()] = values.numpy()
            indexes[..., part.numpy()] = conditional.indexes(scales)
            if means:
                offsets[..., part.numpy()] = predicted.numpy()
            if context is None:  # the anchors exactly as the decoder will have them
                y_anchors[..., part] = values.double() + predicted
        return Symbols(symbols, indexes, z_symbols, z_indexes, offsets)

    def compress(self, x: torch.Tensor, rate=None, tile: int | None = None,
                 latents: tuple | None = None) -> dict:
        """One image -> ``{"strings": [y anchors, y others, z], "shape": z's (h, w)}``; as in
        :meth:`ScaleHyperprior.compress`."""
        symbols = self.symbols(x, rate, tile, latents)
        anchors = anchor_mask(*symbols.y.shape[-2:]).numpy()
        return {"strings": self._code(symbols, (anchors, ~anchors)),
                "shape": tuple(symbols.z.shape[-2:])}

    @torch.no_grad()
    def decompress_tiles(self, strings: list[bytes], shape, rate=None, tile: int | None = None):
        """As :meth:`ScaleHyperprior.decompress_tiles`, in the two passes of the checkerboard.
        """
        if len(strings) != 3:
            raise ValueError("a checkerboard stream has three parts (y anchors, y others, z)")
        self.check_tile(tile)
        _, inverse_gain = self.gains(rate)
        z_hat = self.entropy_bottleneck.decompress(strings[2], (1, self.n, *shape))
        hyper = self._hyper_whole(z_hat, tile)
        anchors = anchor_mask(*hyper.shape[-2:])
        conditional = self.gaussian_conditional
        table = conditional.table()
        y_hat = torch.zeros(1, self.m, *hyper.shape[-2:], dtype=torch.float64)
        for part, y_anchors in ((anchors, None), (~anchors, y_hat)):
            scales, means = self._pass_parameters(hyper, y_anchors, part)
            symbols = fast.decode_with_indexes(strings[0 if y_anchors is None else 1],
                                               conditional.indexes(scales), table)
            y_hat[..., part] = torch.from_numpy(symbols).double() + means
        return self._synthesis_tiles(y_hat.float(), inverse_gain, tile)


def split_parameters(model: nn.Module) -> tuple[list, list]:
    """(main parameters, the entropy bottleneck's quantiles): the two optimisers' shares."""
    main, quantiles = [], []
    for name, parameter in model.named_parameters():
        (quantiles if name.endswith("quantiles") else main).append(parameter)
    return main, quantiles


MODELS = {"factorized": FactorizedPrior, "hyperprior": ScaleHyperprior,
          "mean-scale": MeanScaleHyperprior, "checkerboard": CheckerboardMeanScale}


def build_model(config: dict) -> CompressionModel:
    """A model from its config ``{"architecture", "n", "m", "num_rates", ...}`` (as weights
    files record it); ValueError for an architecture not in :data:`MODELS`."""
    architecture = config["architecture"]
    if architecture not in MODELS:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(MODELS)}")
    kwargs = {"n": config["n"], "m": config["m"]}
    if config.get("num_rates", 1) > 1:
        kwargs["num_rates"] = config["num_rates"]
    return MODELS[architecture](**kwargs)


def rate_bits(likelihoods: dict) -> torch.Tensor:
    """Estimated code length of each image, ``-sum log2 likelihood`` over its latents: (B,)."""
    return sum(-torch.log2(lik).flatten(1).sum(dim=1) for lik in likelihoods.values())


LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)  # CompressAI, MSE


class RateDistortionLoss(nn.Module):
    """``loss = bpp + lmbda * 255² * MSE``, the Lagrangian of rate–distortion training.

    ``lmbda`` values as in CompressAI's MSE models (:data:`LAMBDAS`, 0.0018 … 0.18) span
    roughly 0.1–2 bpp. ``lmbda`` may be a ``(B,)`` tensor, one trade-off per image (for
    variable-rate training); the loss is then the batch mean of the per-image Lagrangians.
    """

    def __init__(self, lmbda: float = 0.0067):
        super().__init__()
        self.lmbda = lmbda

    def forward(self, output: dict, target: torch.Tensor, lmbda=None) -> dict:
        lmbda = self.lmbda if lmbda is None else lmbda
        height, width = target.shape[-2:]
        bpp = rate_bits(output["likelihoods"]) / (height * width)  # (B,)
        mse = ((output["x_hat"] - target) ** 2).flatten(1).mean(dim=1)  # (B,)
        loss = (bpp + lmbda * 255**2 * mse).mean()
        return {"loss": loss, "bpp": bpp.mean(), "mse": mse.mean()}
