"""The course's learned lossless coder: polyphase passes, a small CNN, the course's rANS.

Idea. A causal predictor (PNG's filters, LOCO-I in :mod:`course_lib.codecs.lossless`) sees a
pixel's left and upper neighbours only, and a network asked for one pixel at a time would be
called a million times. Here the image is split into its four 2 x 2 *polyphase* sub-images
(phase ``(a, b)`` holds the pixels at rows ``a, a + 2, ...`` and columns ``b, b + 2, ...``):

* phase (0, 0) is a half-size image: it is coded the same way, recursively, ``levels`` times,
  and the smallest one with the predictive coder (LLCC, :mod:`~course_lib.codecs.lossless`);
* then three *passes* per level, each one network call over the whole sub-image: pass 0
  codes phase (1, 1) from its four diagonal (0, 0) neighbours, pass 1 phase (0, 1) from
  (0, 0) and (1, 1) (its left, right, upper and lower neighbours), pass 2 phase (1, 0) from
  all three others. Later passes see pixels on every side, more context than any causal
  predictor has, and a decoder makes ``3 * levels`` network calls in all. The default is
  one level (:data:`DEFAULT_LEVELS`): on Kodak a second one did not pay (kodim01: 3.588
  bits per subpixel with one, 3.670 with two; kodim20: 2.658 and 2.635).

The network (:class:`PassNet`, one per pass, shared by all levels) reads the known phases and
their plain interpolation at the target pixels (the average of the four nearest known
neighbours) and gives each target subpixel a discretised logistic: a mean (the interpolation
plus a correction) and a scale. Colours are coded in the order G, R, B, each seeing the ones
before it through PixelCNN++'s linear mean shifts: ``mean_R = mu_R + alpha (G - mean_G)``,
``mean_B = mu_B + beta (G - mean_G) + gamma (R - mean_R)`` with ``alpha, beta, gamma`` also
from the network. A greyscale image is fed as R = G = B and coded with the G output only.

Coding. A subpixel ``x`` with mean ``m`` and scale ``s`` is sent as its residual
``r = x - round(m)`` wrapped into -128..127 (``x = (round(m) + r) mod 256``) with one of two
kinds of integer CDF tables (the file says which; the encoder tries both and keeps the
smaller file):

* mode 0, the model's own: the table of ``(scale index, offset bin)``, 64 log-spaced scales
  (:func:`~course_lib.entropy.cdf.log_scale_table`) times 4 bins of ``m - round(m)``, each a
  discretised logistic over the 256 residuals (:func:`coding_table`, built once). What the
  network was trained for: the coded size is its training loss (tests check it);
* mode 1, counted on this image: one table per colour, class of 4 neighbouring scales and
  class of the earlier colours' residual magnitudes at the pixel (:data:`CONTEXTS` per
  colour), stored in the file like LLCC's tables; ``r`` is negated where
  ``m < round(m)``, so the side of 0 towards the mean is always the same. This corrects a
  model whose scales or tails do not fit the image (Kodak's film grain, say).

Adaptation (encoding as inference). The network was trained on clean photos; the encoder
may fit each pass's last 1x1 layer (:func:`fit_adaptation`: Adam on this image's estimated
bits, the features before that layer computed once) and send the change in integer steps of
:data:`ADAPT_STEP`; the decoder adds it to the shipped weights (:func:`adapted_model`) and
runs the passes as usual. On Kodak this saves several per cent for about 1.7 kB of side
information (``benchmarks/results/lossless_kodak.txt``). Such a file is format version 2;
one without a fit is version 1, what course_lib wrote before the fit existed.

The values of one pass and colour go through
:func:`course_lib.entropy.fast.encode_with_indexes` (rANS, with a CRC-32 of the values) as
one *segment*.

Encoder and decoder run the network identically: in float64 on the CPU, on the same tiles
(:data:`TILE` x :data:`TILE` outputs, each computed from its tile and a margin of
:data:`HALO`), so the table indexes agree bit for bit (tests check 1 and 2 threads). As with
the lossy codec, another kind of CPU could round a float64 differently; the segments'
CRC-32 then report it (a :class:`~course_lib.codecs.lossless.LosslessFileError`, never wrong
pixels).

File layout (integers big-endian)::

    offset size  field
    0      4     magic b"LLCL" (Lossless Course codec, Learned)
    4      1     format version: 1, or 2 (with an adaptation section)
    5      1     model id (0: weights/lossless/polyphase.pt, 1: polyphase-2.pt)
    6      1     planes: 1 (greyscale) or 3 (RGB)
    7      1     levels L (0..MAX_LEVELS)
    8      1     table mode: 0 (the model's logistic tables) or 1 (counted on the image)
    9      4     image height H (>= 1)
    13     4     image width W (>= 1)
    17     4     length C of the coarsest image's LLCC file
    21     4     length T of the table section (0 in mode 0)
    (25    4     version 2 only: length A >= 1 of the adaptation section; the offsets
                 below then move on by 4)
    25     4n    lengths of the n segments, planes of them per pass that has pixels (3 per
                 level, fewer for images a pixel wide): the coarsest level first, then its
                 passes 0..2, then the colours in coding order (G, R, B, or grey)
    25+4n  C     the coarsest image (size after L halvings, rounding up) as an LLCC file
    ...    T     mode 1: the tables, as LLCC's table section (zlib; per colour and context:
                 a 2-byte count n of residuals, 0 for none, then the first residual and the
                 n levels as differences)
    ...    A     version 2: the adaptation, zlib of int16 steps, pass by pass the last
                 layer's weights (row by row) then its biases
    ...          the segments, in that order
    end-4  4     CRC-32 of everything before it

``compress_learned(image) -> bytes`` and ``decompress_learned(bytes) -> image``; a decoder
checks, before any network runs: length, magic, version, CRC-32 of the file, a known model,
1 or 3 planes, levels and table mode in range, 1 .. ``MAX_PIXELS`` pixels, lengths that fill
the file exactly, segments of whole words, the table section (no zip bomb, every table in
range), the adaptation section (inflated to exactly its size, never more); then the coarse
LLCC file (its own checks, and the declared shape); while decoding,
each segment (long enough for its values, tables for every context used, no escape, an rANS
stream that ends empty, its CRC-32). Work is bounded by the declared size, which the pixel
limit bounds (about 4 microseconds a pixel on one core: 1.5 s for a Kodak image). Every
problem raises :class:`~course_lib.codecs.lossless.LosslessFileError`.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from ..entropy.cdf import CdfTable, log_scale_table, scale_indexes
from ..entropy.errors import DecodeError
from ..entropy.fast import decode_with_indexes, encode_with_indexes
from ..images import ImageError, check_pixel_count
from . import lossless
from .lossless import LosslessFileError

MAGIC = b"LLCL"
VERSION = 2  # 1: no adaptation section (still written when the encoder does not adapt)
MAX_LEVELS = 4
DEFAULT_LEVELS = 1
_HEADER = struct.Struct(">4sBBBBBIIII")  # version 1; version 2 adds the adaptation length
_ADAPTATION_LENGTH = struct.Struct(">I")
_CRC = struct.Struct(">I")
_LENGTH = struct.Struct(">I")

# model id -> shipped weights. Files name the model that coded them, so every model stays:
# 0, the first training run; 1 (the default), the same network trained on from it.
MODELS = {0: "lossless/polyphase.pt", 1: "lossless/polyphase-2.pt"}
DEFAULT_MODEL = 1

# Coding tables: scales (in levels of 0..255) and offset bins of m - round(m).
SCALES = log_scale_table(0.15, 64.0, 64)
OFFSET_BINS = 4
PRECISION = 16
MIN_PROBABILITY = 2.0**-PRECISION  # what the tables give the least likely residual, about
# Per-image tables (mode 1): per colour, one per class of 4 neighbouring scales and class of
# the earlier colours' residual magnitudes at the pixel (R and B only; what the network's
# scale, computed before those colours are known, cannot see).
SCALE_CLASSES = 16
CROSS_BOUNDS = np.array([2, 5, 13])
CONTEXTS = SCALE_CLASSES * (CROSS_BOUNDS.size + 1)  # per colour
COLOUR_ORDER = (1, 0, 2)  # G, then R, then B
TILE, HALO = 128, 3  # network tiles: outputs per side, and the margin three 3x3 layers need

# Adaptation (format version 2): the encoder fits each pass's last layer to the image and sends
# the change from the shipped weights in steps of ADAPT_STEP (int16, zlib).
ADAPT_STEP = 2.0**-10
ADAPT_STEPS = 300  # Adam steps of the fit (constant learning rate ADAPT_LR), on at most
ADAPT_LR = 3e-3
ADAPT_POSITIONS = 1 << 15  # positions of each pass (a seeded random sample beyond that)
ADAPT_MIN_PIXELS = 1 << 14  # smaller images cannot repay the section (about 1.7 kB)

# pass k codes PHASES[k + 1] from PHASES[: k + 1]
PHASES = ((0, 0), (1, 1), (0, 1), (1, 0))


# --- polyphase split ------------------------------------------------------------------------


def phase_shape(height: int, width: int, phase: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of phase ``(a, b)`` of an ``height x width`` image."""
    return (height - phase[0] + 1) // 2, (width - phase[1] + 1) // 2


def polyphase_split(image: np.ndarray) -> list[np.ndarray]:
    """``(H, W, ...)`` -> the four phases in :data:`PHASES` order (views)."""
    return [image[a::2, b::2] for a, b in PHASES]


def polyphase_merge(phases, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`polyphase_split` for an ``height x width`` image."""
    first = np.asarray(phases[0])
    image = np.empty((height, width, *first.shape[2:]), first.dtype)
    for (a, b), phase in zip(PHASES, phases, strict=True):
        image[a::2, b::2] = phase
    return image


def _grid(phase: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(N, C, h, w) phase grid padded by edge replication to (N, C, rows, cols); an empty
    one becomes mid-grey (0 in network units)."""
    n, c, h, w = phase.shape
    if h == 0 or w == 0:
        return phase.new_zeros(n, c, rows, cols)
    if (h, w) == (rows, cols):
        return phase
    index_r = torch.arange(rows).clamp(max=h - 1)
    index_c = torch.arange(cols).clamp(max=w - 1)
    return phase[:, :, index_r][:, :, :, index_c]


def _shift(grid: torch.Tensor, di: int, dj: int) -> torch.Tensor:
    """``grid[i + di, j + dj]`` with indexes clamped to the grid."""
    rows, cols = grid.shape[-2:]
    index_r = (torch.arange(rows) + di).clamp(0, rows - 1)
    index_c = (torch.arange(cols) + dj).clamp(0, cols - 1)
    return grid[:, :, index_r][:, :, :, index_c]


def _interpolation(grids: list[torch.Tensor], k: int) -> torch.Tensor:
    """The plain average of the four nearest known neighbours of pass ``k``'s targets."""
    p00, p11 = grids[0], grids[1] if k > 0 else None
    if k == 0:  # (1, 1): the four diagonal (0, 0) pixels
        parts = [p00, _shift(p00, 0, 1), _shift(p00, 1, 0), _shift(p00, 1, 1)]
    elif k == 1:  # (0, 1): (0, 0) left and right, (1, 1) above and below
        parts = [p00, _shift(p00, 0, 1), _shift(p11, -1, 0), p11]
    else:  # (1, 0): (1, 1) left and right, (0, 0) above and below
        parts = [_shift(p11, 0, -1), p11, p00, _shift(p00, 1, 0)]
    return (parts[0] + parts[1] + parts[2] + parts[3]) / 4


# --- the network ----------------------------------------------------------------------------


class PassNet(nn.Module):
    """One pass's network: known phases (3 channels each) and their interpolation (3) ->
    9 channels per target position: mean corrections (3), log scales (3), colour shifts (3).

    Three 3x3 convolutions then two 1x1 on the half-size grid: a target sees 7 x 7 blocks
    of known phases, about 14 x 14 pixels of the image.
    """

    def __init__(self, known: int, channels: int = 48):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3 * known + 3, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 1), nn.ReLU(),
            nn.Conv2d(channels, 9, 1),
        )
        with torch.no_grad():  # start from the interpolation with a scale of about 4 levels
            last = self.body[-1]
            last.weight.mul_(0.1)
            last.bias.zero_()
            last.bias[3:6] = math.log(4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PolyphaseModel(nn.Module):
    """The three :class:`PassNet` of the learned lossless coder (shared by all levels)."""

    def __init__(self, channels: int = 48):
        super().__init__()
        self.config = {"channels": channels}
        self.passes = nn.ModuleList(PassNet(k + 1, channels) for k in range(3))

    def pass_inputs(self, phases: list[torch.Tensor], k: int) -> tuple[torch.Tensor, tuple]:
        """Network input of pass ``k`` from the known phases (network units, (N, 3, h, w)
        each) on the grid of phase (0, 0); and that grid's shape."""
        rows, cols = phases[0].shape[-2:]
        grids = [_grid(phase, rows, cols) for phase in phases[: k + 1]]
        base = _interpolation(grids, k)
        return torch.cat([*grids, base], 1), (rows, cols)

    def pass_outputs(self, phases: list[torch.Tensor], k: int, tiled: bool = False):
        """(N, 9, rows, cols) outputs of pass ``k`` with the interpolation added to the
        means; ``tiled``: computed tile by tile (:data:`TILE`), as the coder does."""
        inputs, _ = self.pass_inputs(phases, k)
        net = self.passes[k]
        if not tiled:
            out = net(inputs)
        else:
            out = inputs.new_empty(inputs.shape[0], 9, *inputs.shape[-2:])
            rows, cols = inputs.shape[-2:]
            for window, inside in _tiles(rows, cols, rows, cols):
                part = _forward_exact(net, inputs[(..., *window)])
                out[(..., *inside)] = part[(..., *_relative(inside, window))]
        base = inputs[:, -3:]
        return torch.cat([out[:, :3] + base, out[:, 3:]], 1)


def _tiles(height: int, width: int, rows: int, cols: int):
    """The network's tiles over the first ``height x width`` outputs of a ``rows x cols``
    grid: (the input window, a tile and its margin of :data:`HALO` clipped to the grid; the
    tile of outputs), each a pair of row and column slices of the grid."""
    for top in range(0, height, TILE):
        for left in range(0, width, TILE):
            bottom, right = min(height, top + TILE), min(width, left + TILE)
            yield ((slice(max(0, top - HALO), min(rows, bottom + HALO)),
                    slice(max(0, left - HALO), min(cols, right + HALO))),
                   (slice(top, bottom), slice(left, right)))


def _relative(inside: tuple[slice, slice], window: tuple[slice, slice]):
    """The slices ``inside`` (of the grid) as slices of ``window``'s crop."""
    return tuple(slice(a.start - b.start, a.stop - b.start)
                 for a, b in zip(inside, window, strict=True))


def _forward_exact(net: PassNet, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` for the coder: float64 on one thread, so that encoder and decoder get the
    same numbers whatever the thread setting. ``x``: (1, C, h, w) float64.

    A 3x3 convolution is nine matrix products over the zero-padded map flattened row by row:
    the shift (i, j) is the slice starting at ``i * (w + 2) + j``, a view (no copy); each row
    of outputs then carries two columns of wrap-around, dropped at the end. Twice as fast as
    ``conv2d`` in float64.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        h, w = x.shape[-2:]
        features = x[0].double()
        for layer in net.body:
            if isinstance(layer, nn.ReLU):
                features = features.clamp_min_(0)
                continue
            weight, bias = layer.weight.double(), layer.bias.double()
            channels = features.shape[0]
            if layer.kernel_size == (1, 1):
                features = torch.addmm(bias[:, None], weight[:, :, 0, 0],
                                       features.reshape(channels, -1)).reshape(-1, h, w)
                continue
            flat = torch.nn.functional.pad(features, (1, 1, 1, 2)).reshape(channels, -1)
            span = h * (w + 2)
            out = bias[:, None].expand(-1, span).clone()
            for i in range(3):
                for j in range(3):
                    start = i * (w + 2) + j
                    out.addmm_(weight[:, :, i, j], flat[:, start : start + span])
            features = out.reshape(-1, h, w + 2)[:, :, :w].contiguous()
        return features[None]
    finally:
        torch.set_num_threads(threads)


def to_network(x: torch.Tensor) -> torch.Tensor:
    """Levels 0..255 -> network units (about -2..2)."""
    return (x - 127.5) / 64


def channel_params(out: torch.Tensor, target: torch.Tensor, channel: int):
    """Mean and scale (levels of 0..255) of colour ``channel`` (0 R, 1 G, 2 B) of a pass's
    targets, given ``out`` (N, 9, h, w) and the targets' true values ``target`` (N, 3, h, w;
    only the colours coded before ``channel`` are read). Shapes (N, h, w)."""
    mean = 127.5 + 64 * out[:, :3]
    log_scale = out[:, 3 + channel].clamp(math.log(SCALES[0]), math.log(SCALES[-1]))
    green = mean[:, 1]
    if channel == 1:
        return green, log_scale.exp()
    shifted = mean[:, 0] + out[:, 6] * (target[:, 1] - green)
    if channel == 0:
        return shifted, log_scale.exp()
    return (mean[:, 2] + out[:, 7] * (target[:, 1] - green)
            + out[:, 8] * (target[:, 0] - shifted)), log_scale.exp()


def logistic_bits(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-log2 of the discretised logistic's mass of the unit bin around ``x`` (floored at
    :data:`MIN_PROBABILITY`, about what the integer tables give the least likely value)."""
    upper = torch.sigmoid((x + 0.5 - mean) / scale)
    lower = torch.sigmoid((x - 0.5 - mean) / scale)
    return -torch.log2((upper - lower).clamp_min(MIN_PROBABILITY))


def _phases_of(image: torch.Tensor) -> list[torch.Tensor]:
    return [image[:, :, a::2, b::2] for a, b in PHASES]


def level_bits(model: PolyphaseModel, image: torch.Tensor, grey: bool = False):
    """Estimated bits of the three passes of one level of ``image`` (N, 3, H, W), levels
    0..255 as floats: (bits summed over all coded subpixels, number of them)."""
    phases = _phases_of(image)
    units = [to_network(phase) for phase in phases]
    total, count = image.new_zeros(()), 0
    for k in range(3):
        target = phases[k + 1]
        if target.numel() == 0:
            continue
        h, w = target.shape[-2:]
        out = model.pass_outputs(units, k)[:, :, :h, :w]
        for channel in ((1,) if grey else COLOUR_ORDER):
            mean, scale = channel_params(out, target, channel)
            total = total + logistic_bits(target[:, channel], mean, scale).sum()
            count += target[:, channel].numel()
    return total, count


def training_loss(model: PolyphaseModel, batch: torch.Tensor, levels: int = 2) -> dict:
    """The trainer's loss: estimated bits per subpixel of ``levels`` levels of a batch of
    crops ((N, 3, H, W) in [0, 1], as :class:`~course_lib.datasets.PatchDataset` gives)."""
    image = torch.round(batch * 255)
    total, count = image.new_zeros(()), 0
    for _ in range(levels):
        bits, n = level_bits(model, image)
        total, count = total + bits, count + n
        image = image[:, :, ::2, ::2]
    bpsp = total / count
    return {"loss": bpsp, "bpsp": bpsp}


def estimated_bits(image: np.ndarray, model: PolyphaseModel | None = None) -> float:
    """The training loss's estimate, in bits, of the three passes of the first level of a
    uint8 image (the shipped model by default): what :func:`compress_learned` with
    ``levels=1, table_mode=0`` pays for them, up to the tables' rounding and headers."""
    model = shipped_model() if model is None else model
    array = _check_image(image)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        bits, _ = level_bits(model, _as_tensor(array).to(dtype), grey=array.ndim == 2)
    return float(bits)


# --- coding tables --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def coding_table() -> CdfTable:
    """Table ``scale * OFFSET_BINS + bin``: the discretised logistic of that scale, centred
    at the bin's middle offset, over residuals -128..127 (and the escape, never used)."""
    residuals = np.arange(-128, 128, dtype=np.float64)
    pmfs = []
    for scale in SCALES:
        for b in range(OFFSET_BINS):
            centre = (b + 0.5) / OFFSET_BINS - 0.5
            upper = expit((residuals + 0.5 - centre) / scale)
            lower = expit((residuals - 0.5 - centre) / scale)
            pmfs.append(np.maximum(upper - lower, 1e-12))
    return CdfTable.from_pmfs(pmfs, np.full(len(pmfs), -128), PRECISION)


@dataclass
class _Coding:
    """How the subpixels of one colour of one pass are coded, from the network's float64
    means and scales (the same numbers in encoder and decoder)."""

    fixed: np.ndarray  # index into coding_table(): scale index * OFFSET_BINS + offset bin
    context: np.ndarray  # 0 .. CONTEXTS - 1: the per-image table's context
    rounded: np.ndarray  # round(mean), int64
    flip: np.ndarray  # mean < round(mean): per-image tables code -r (see _residuals)


def _coding(mean: np.ndarray, scale: np.ndarray, cross: np.ndarray) -> _Coding:
    """``cross``: the summed residual magnitudes of the colours coded before, at each pixel
    (0 for the first)."""
    rounded = np.floor(mean + 0.5)
    offset = mean - rounded  # -0.5 .. 0.5
    offset_bin = np.clip(np.floor((offset + 0.5) * OFFSET_BINS), 0, OFFSET_BINS - 1)
    scale_index = scale_indexes(scale, SCALES)
    return _Coding(scale_index * OFFSET_BINS + offset_bin.astype(np.int64),
                   scale_index * SCALE_CLASSES // SCALES.size * (CROSS_BOUNDS.size + 1)
                   + np.searchsorted(CROSS_BOUNDS, cross, side="right"),
                   rounded.astype(np.int64),
                   offset < 0)


def _residuals(values: np.ndarray, coding: _Coding, mode: int) -> np.ndarray:
    """Residuals -128..127 of uint8 ``values``: ``x - round(m)`` wrapped; with per-image
    tables (mode 1) negated (and wrapped) where the mean lies below its rounding, so that
    "towards the mean" is always the same side of 0 in a table."""
    residuals = (values.astype(np.int64) - coding.rounded + 128) % 256 - 128
    if mode == 1:
        residuals = np.where(coding.flip, (128 - residuals) % 256 - 128, residuals)
    return residuals


def _values(residuals: np.ndarray, coding: _Coding, mode: int) -> np.ndarray:
    """Inverse of :func:`_residuals`."""
    if mode == 1:
        residuals = np.where(coding.flip, (128 - residuals) % 256 - 128, residuals)
    return ((coding.rounded + residuals) % 256).astype(np.uint8)


def _image_tables(entries) -> tuple[np.ndarray, CdfTable | None]:
    """Per-image tables (mode 1) from ``entries[context]`` = (first residual, levels) or
    None: (context -> table row, -1 where unused; the tables)."""
    rows = np.full(len(entries), -1, np.int64)
    cdfs, offsets = [], []
    for context, entry in enumerate(entries):
        if entry is not None:
            rows[context] = len(cdfs)
            cdfs.append(lossless.cdf_from_levels(entry[1]))
            offsets.append(entry[0])
    if not cdfs:
        return rows, None
    padded = np.full((len(cdfs), max(cdf.size for cdf in cdfs) + 1), 1 << PRECISION, np.int64)
    for row, cdf in zip(padded, cdfs, strict=True):
        row[: cdf.size] = cdf
    return rows, CdfTable(padded, [cdf.size - 1 for cdf in cdfs], offsets, PRECISION)


def _parse_section(section: bytes, contexts: int) -> list:
    """The entries of a per-image table section (the layout of LLCC's, one plane of 256
    residuals -128..127 with ``contexts`` tables), every field checked."""
    return lossless.read_table_section(section, [(-128, 127)], contexts)[0]


# --- the shipped model ----------------------------------------------------------------------


def save_model(model: PolyphaseModel, path) -> None:
    """``{"config", "state_dict"}`` (float32) for :func:`load_model`."""
    state = {name: tensor.detach().float().cpu() for name, tensor in
             model.state_dict().items()}
    torch.save({"config": dict(model.config), "state_dict": state}, path)


def load_model(path) -> PolyphaseModel:
    """A :class:`PolyphaseModel` in float64 (the coder's precision) from :func:`save_model`."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = PolyphaseModel(**saved["config"])
    model.load_state_dict(saved["state_dict"])
    return model.double().eval()


_LOADED: dict[int, PolyphaseModel] = {}


def shipped_model(model_id: int = DEFAULT_MODEL) -> PolyphaseModel:
    """The shipped model with this id, checked by sha256 (:mod:`course_lib.weights`)."""
    if model_id not in _LOADED:
        from .. import weights

        _LOADED[model_id] = load_model(weights.path(MODELS[model_id]))
    return _LOADED[model_id]


# --- adaptation: the encoder fits the last layers to the image -----------------------------


def adaptation_size(model: PolyphaseModel) -> int:
    """How many parameters a file may adapt: each pass's last 1x1 layer, weights and biases
    (3 x (9 x 48 + 9) = 1,323 for the shipped models)."""
    return sum(net.body[-1].weight.numel() + net.body[-1].bias.numel() for net in model.passes)


def adapted_model(model: PolyphaseModel, deltas: np.ndarray) -> PolyphaseModel:
    """A float64 copy of ``model`` whose last layers are moved by ``deltas * ADAPT_STEP``
    (:func:`adaptation_size` integers: pass by pass, the weights row by row, then the
    biases). Encoder and decoder build it the same way, so they get the same numbers."""
    copy = PolyphaseModel(**model.config).double().eval()
    copy.load_state_dict(model.state_dict())
    deltas = np.asarray(deltas, np.int64)
    if deltas.shape != (adaptation_size(copy),):
        raise ValueError(f"{adaptation_size(copy)} deltas expected, got {deltas.shape}")
    offset = 0
    with torch.no_grad():
        for net in copy.passes:
            for param in (net.body[-1].weight, net.body[-1].bias):
                part = deltas[offset : offset + param.numel()].astype(np.float64) * ADAPT_STEP
                param += torch.from_numpy(part).reshape(param.shape)
                offset += param.numel()
    return copy


def _fit_samples(model: PolyphaseModel, pyramid: list[np.ndarray], levels: int, seed: int = 0):
    """Per pass: (features before the last layer (P, C), interpolation (P, 3), targets (P, 3),
    weight) at up to :data:`ADAPT_POSITIONS` positions of each level (a seeded random sample
    when there are more), float32; ``weight`` = positions / sampled ones."""
    rng = np.random.default_rng(seed)
    samples = [[] for _ in model.passes]
    for level in range(levels):
        phases = [_as_tensor(phase).float() for phase in polyphase_split(pyramid[level])]
        units = [to_network(phase) for phase in phases]
        for k, net in enumerate(model.passes):
            target = phases[k + 1]
            h, w = target.shape[-2:]
            if h == 0 or w == 0:
                continue
            inputs, (rows, cols) = model.pass_inputs(units, k)
            keep = min(1.0, ADAPT_POSITIONS / (h * w))
            parts = []
            for window, inside in _tiles(h, w, rows, cols):  # as the coder, to bound memory
                features = net.body[:-1](inputs[(..., *window)])
                part = torch.cat([features[(0, ..., *_relative(inside, window))],
                                  inputs[(0, slice(-3, None), *inside)],
                                  target[(0, ..., *inside)]]).flatten(1).T
                if keep < 1:
                    part = part[torch.from_numpy(rng.random(part.shape[0]) < keep)]
                parts.append(part)
            samples[k].append((torch.cat(parts), h * w))
    fits = []
    for per_level in samples:
        if not per_level:
            fits.append(None)
            continue
        rows = torch.cat([part for part, _ in per_level])
        positions = sum(count for _, count in per_level)
        channels = rows.shape[1] - 6
        fits.append((rows[:, :channels], rows[:, channels : channels + 3],
                     rows[:, channels + 3 :], positions / max(1, rows.shape[0])))
    return fits


def _fit_bits(layers, fits, channels) -> torch.Tensor:
    """Estimated bits (scaled up from the samples) with last layers ``layers`` (per pass:
    weight (9, C), bias (9))."""
    total = torch.zeros(())
    for (weight, bias), fit in zip(layers, fits, strict=True):
        if fit is None:
            continue
        features, base, target, scale_up = fit
        out = features @ weight.T + bias
        out = torch.cat([out[:, :3] + base, out[:, 3:]], 1).T[None, :, :, None]
        target = target.T[None, :, :, None]
        for channel in channels:
            mean, scale = channel_params(out, target, channel)
            total = total + scale_up * logistic_bits(target[:, channel], mean, scale).sum()
    return total


def fit_adaptation(model: PolyphaseModel, pyramid: list[np.ndarray], levels: int,
                   grey: bool, steps: int = ADAPT_STEPS) -> tuple[np.ndarray, float]:
    """Encoding as inference, for the lossless coder: Adam on the estimated bits of this
    image, over each pass's last layer only (features computed once). Returns the change
    in steps of :data:`ADAPT_STEP` (int64, for :func:`adapted_model`) and the estimated
    bits it saves (after that rounding; negative if it costs). Runs on one thread, so the
    result does not depend on the thread setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model32 = PolyphaseModel(**model.config).eval()
        model32.load_state_dict({name: value.float() for name, value in
                                 model.state_dict().items()})
        with torch.no_grad():
            fits = _fit_samples(model32, pyramid, levels)
        channels = (1,) if grey else COLOUR_ORDER
        start = [(net.body[-1].weight[:, :, 0, 0].detach(), net.body[-1].bias.detach())
                 for net in model32.passes]
        if all(fit is None for fit in fits):  # no pass has pixels: nothing to fit
            return np.zeros(adaptation_size(model), np.int64), 0.0
        layers = [(weight.clone().requires_grad_(True), bias.clone().requires_grad_(True))
                  for weight, bias in start]
        optimiser = torch.optim.Adam([p for layer in layers for p in layer], lr=ADAPT_LR)
        for _ in range(steps):
            optimiser.zero_grad()
            _fit_bits(layers, fits, channels).backward()
            optimiser.step()
        limit = np.iinfo(np.int16).max
        deltas, rounded = [], []
        with torch.no_grad():
            for (weight, bias), (weight0, bias0) in zip(layers, start, strict=True):
                steps_w = torch.round((weight - weight0) / ADAPT_STEP).clamp(-limit, limit)
                steps_b = torch.round((bias - bias0) / ADAPT_STEP).clamp(-limit, limit)
                deltas += [steps_w.flatten(), steps_b]
                rounded.append((weight0 + steps_w * ADAPT_STEP, bias0 + steps_b * ADAPT_STEP))
            saved = float(_fit_bits(start, fits, channels) - _fit_bits(rounded, fits, channels))
        return torch.cat(deltas).numpy().astype(np.int64), saved
    finally:
        torch.set_num_threads(threads)


def _adaptation_section(deltas: np.ndarray) -> bytes:
    return zlib.compress(deltas.astype(">i2").tobytes(), 9)


def _read_adaptation(section: bytes, size: int) -> np.ndarray:
    """The deltas of an adaptation section, checked: exactly ``size`` int16 after inflating
    (never more than that is inflated)."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(section, 2 * size + 1)
    except zlib.error:
        raw = None
    if raw is None or len(raw) != 2 * size or not inflater.eof or inflater.unused_data:
        raise LosslessFileError("the file's adaptation section is damaged: corrupted file; "
                                "re-encode the original image")
    return np.frombuffer(raw, ">i2").astype(np.int64)


# --- encoder and decoder --------------------------------------------------------------------


def _check_image(image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3
                                                           and array.shape[2] == 3)):
        raise ImageError(f"the learned lossless coder takes uint8 (H, W) or (H, W, 3) arrays, "
                         f"got {array.dtype} {array.shape}")
    if array.size == 0:
        raise ImageError("the image is empty")
    check_pixel_count(*array.shape[:2], None, ImageError, "the image")
    return array


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """(h, w, 3) or (h, w) integers -> float64 (1, 3, h, w) (grey repeated)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    if tensor.ndim == 2:
        tensor = tensor[..., None].expand(-1, -1, 3)
    return tensor.permute(2, 0, 1)[None].contiguous()


def _shapes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """Image size at each level, full size first, the coarsest (LLCC) last."""
    shapes = [(height, width)]
    for _ in range(levels):
        shapes.append(phase_shape(*shapes[-1], (0, 0)))
    return shapes


def _segment_plan(height: int, width: int, levels: int, planes: int):
    """(level, pass, target shape) of every pass that has pixels, in coding order (the
    coarsest level first; level 0 is full size); each makes ``planes`` segments."""
    plan = []
    shapes = _shapes(height, width, levels)
    for level in reversed(range(levels)):
        shape = shapes[level]
        for k in range(3):
            target = phase_shape(*shape, PHASES[k + 1])
            if target[0] and target[1]:
                plan.append((level, k, target))
    return plan


def _code_pass(model, known: list[np.ndarray], k: int, target_shape, channels, code):
    """Pass ``k`` on the known phases (uint8 (h, w, 3) or (h, w)): for each colour in
    ``channels`` (coding order), ``code(coding)`` (a :class:`_Coding` of (h, w) arrays) ->
    that colour's uint8 values (the encoder gives the true ones, the decoder reads them).
    Returns (h, w, colours) in coding order."""
    h, w = target_shape
    with torch.no_grad():
        out = model.pass_outputs([to_network(_as_tensor(p)) for p in known], k, tiled=True)
    out = out[:, :, :h, :w]
    target = torch.zeros(1, 3, h, w, dtype=torch.float64)
    values = np.zeros((h, w, len(channels)), np.uint8)
    cross = np.zeros((h, w), np.int64)
    for position, channel in enumerate(channels):
        mean, scale = channel_params(out, target, channel)
        coding = _coding(mean[0].numpy(), scale[0].numpy(), cross)
        values[..., position] = code(coding)
        cross = cross + np.abs(_residuals(values[..., position], coding, 0))
        target[0, channel] = torch.from_numpy(values[..., position].astype(np.float64))
    return values


def compress_learned(image: np.ndarray, *, levels: int | None = None,
                     model_id: int = DEFAULT_MODEL, table_mode: int | None = None,
                     adapt: bool | None = None, adapt_steps: int = ADAPT_STEPS) -> bytes:
    """uint8 greyscale ``(H, W)`` or RGB ``(H, W, 3)`` -> the bytes of a complete file.

    ``levels``: polyphase levels (0..:data:`MAX_LEVELS`; default :data:`DEFAULT_LEVELS`,
    none for images under 16 pixels a side); 0 is a plain LLCC file in this
    container. ``table_mode``: 0 (the model's logistic tables), 1 (tables counted on this
    image, stored in the file), or None (default) for whichever makes the smaller file.
    ``adapt``: fit the passes' last layers to this image (:func:`fit_adaptation`,
    ``adapt_steps`` Adam steps) and send the change (a version-2 file); None (default) keeps
    the fit only where its estimated saving exceeds the bytes it costs (and does not try
    images under :data:`ADAPT_MIN_PIXELS` pixels), False never fits
    (a version-1 file, as course_lib wrote before adaptation existed), True always does
    when ``levels`` >= 1 (with no network pass there is nothing to fit).
    """
    array = _check_image(image)
    height, width = array.shape[:2]
    if levels is None:
        levels = int(np.clip(math.floor(math.log2(min(height, width) / 8)), 0, DEFAULT_LEVELS))
    if levels not in range(MAX_LEVELS + 1):
        raise ValueError(f"levels must be 0..{MAX_LEVELS}, got {levels!r}")
    if model_id not in MODELS:
        raise ValueError(f"model_id must be one of {sorted(MODELS)}, got {model_id!r}")
    if table_mode not in (None, 0, 1):
        raise ValueError(f"table_mode must be None, 0 or 1, got {table_mode!r}")
    if adapt not in (None, False, True):
        raise ValueError(f"adapt must be None, False or True, got {adapt!r}")
    if not isinstance(adapt_steps, int) or adapt_steps < 0:
        raise ValueError(f"adapt_steps must be an integer >= 0, got {adapt_steps!r}")
    model = shipped_model(model_id)
    grey = array.ndim == 2
    channels = (1,) if grey else COLOUR_ORDER
    pyramid = [array]
    for _ in range(levels):
        pyramid.append(pyramid[-1][::2, ::2])
    adaptation = b""
    if levels and adapt_steps and (adapt or (adapt is None
                                             and height * width >= ADAPT_MIN_PIXELS)):
        deltas, saved = fit_adaptation(model, pyramid, levels, grey, adapt_steps)
        section = _adaptation_section(deltas)
        if adapt or saved > 8 * (len(section) + _ADAPTATION_LENGTH.size):
            model, adaptation = adapted_model(model, deltas), section
    coarse = lossless.compress_lossless(pyramid[-1])
    records = []  # (colour position, coding, true values), in the stream's order
    for level, k, target_shape in _segment_plan(height, width, levels, len(channels)):
        phases = polyphase_split(pyramid[level])
        target = phases[k + 1]
        target = target[..., None] if grey else target[..., list(channels)]
        positions = iter(range(len(channels)))

        def collect(coding, target=target, positions=positions):
            position = next(positions)
            records.append((position, coding, target[..., position]))
            return target[..., position]

        _code_pass(model, phases[: k + 1], k, target_shape, channels, collect)
    choices = []
    if table_mode in (None, 0):
        table = coding_table()
        choices.append((0, b"", [encode_with_indexes(_residuals(values, coding, 0),
                                                     coding.fixed, table)
                                 for _, coding, values in records]))
    if table_mode in (None, 1) and records:
        contexts = len(channels) * CONTEXTS
        counts = np.zeros(contexts * 256, np.int64)
        for position, coding, values in records:
            keys = ((position * CONTEXTS + coding.context) * 256
                    + _residuals(values, coding, 1) + 128)
            counts += np.bincount(keys.reshape(-1), minlength=counts.size)
        entries = [lossless.table_entry(row, 256) for row in counts.reshape(contexts, 256)]
        rows, table = _image_tables(entries)
        choices.append((1, lossless.table_section([entries]), [
            encode_with_indexes(_residuals(values, coding, 1),
                                rows[position * CONTEXTS + coding.context], table)
            for position, coding, values in records]))
    if not choices:  # table_mode 1 and nothing to code: no tables either
        choices.append((1, lossless.table_section([[None] * len(channels) * CONTEXTS]),
                        []))
    mode, section, segments = min(choices, key=lambda choice: len(choice[1])
                                  + sum(map(len, choice[2])))
    lengths = b"".join(_LENGTH.pack(len(segment)) for segment in segments)
    header = _HEADER.pack(MAGIC, 2 if adaptation else 1, model_id, 1 if grey else 3, levels,
                          mode, height, width, len(coarse), len(section))
    if adaptation:
        header += _ADAPTATION_LENGTH.pack(len(adaptation))
    body = header + lengths + coarse + section + adaptation + b"".join(segments)
    return body + _CRC.pack(zlib.crc32(body))


def _parse(data: bytes, max_pixels: int | None):
    """The checks made before any network runs; returns the header's fields, the coarse
    file and the segments."""
    data = bytes(data)
    if len(data) < _HEADER.size + _CRC.size:
        raise LosslessFileError(f"file too short ({len(data)} bytes) to be a learned lossless "
                                "file; it is truncated or something else")
    (magic, version, model_id, planes, levels, mode, height, width, coarse_length,
     section_length) = _HEADER.unpack_from(data)
    if magic == lossless.MAGIC:
        raise LosslessFileError("this is a predictive (LLCC) lossless file: decode it with "
                                "course_lib.codecs.lossless (the command line's decode reads "
                                "both kinds)")
    if magic != MAGIC:
        raise LosslessFileError("not a learned lossless file (wrong magic bytes); for PNG, "
                                "WebP or JPEG XL use course_lib.images.load_image")
    # version 1 (no adaptation section) is read as well
    lossless.check_version_and_checksum(data, VERSION if version == 1 else version, VERSION,
                                        "learned lossless format")
    if model_id not in MODELS:
        raise LosslessFileError(f"the file names model {model_id}, which this course_lib does "
                                f"not have (it has {sorted(MODELS)}): update course_lib")
    if planes not in (1, 3):
        raise LosslessFileError(f"the file declares {planes} planes (1 or 3 exist): corrupted "
                                "file")
    if levels > MAX_LEVELS:
        raise LosslessFileError(f"the file declares {levels} levels (at most {MAX_LEVELS}): "
                                "corrupted file")
    if mode > 1 or (mode == 0 and section_length):
        raise LosslessFileError(f"the file's table mode {mode} (with a {section_length}-byte "
                                "table section) does not exist: corrupted file")
    if height == 0 or width == 0:
        raise LosslessFileError("the file declares an empty image: corrupted file")
    check_pixel_count(height, width, max_pixels, LosslessFileError, "the file's image")
    plan = _segment_plan(height, width, levels, planes)
    count = len(plan) * planes
    header = _HEADER.size + (_ADAPTATION_LENGTH.size if version == 2 else 0)
    start = header + count * _LENGTH.size
    if start + _CRC.size > len(data):
        raise LosslessFileError("the file is too short for its segment table: corrupted file")
    adaptation_length = (_ADAPTATION_LENGTH.unpack_from(data, _HEADER.size)[0]
                         if version == 2 else 0)
    if version == 2 and (adaptation_length == 0 or levels == 0):
        raise LosslessFileError("a version-2 file without an adaptation section, or with one "
                                "but no network pass: corrupted file")
    lengths = [_LENGTH.unpack_from(data, header + 4 * i)[0] for i in range(count)]
    if (start + coarse_length + section_length + adaptation_length + sum(lengths) + _CRC.size
            != len(data)):
        raise LosslessFileError("the file's section lengths do not add up to its size: "
                                "corrupted file")
    if any(length == 0 or length % 4 for length in lengths):
        raise LosslessFileError("a segment of the file is not whole 32-bit words: corrupted "
                                "file")
    coarse = data[start : start + coarse_length]
    rows = table = None
    if mode == 1:
        section = data[start + coarse_length : start + coarse_length + section_length]
        rows, table = _image_tables(_parse_section(section, planes * CONTEXTS))
    deltas = None
    if adaptation_length:
        begin = start + coarse_length + section_length
        deltas = _read_adaptation(data[begin : begin + adaptation_length],
                                  adaptation_size(shipped_model(model_id)))
    ends = np.cumsum([start + coarse_length + section_length + adaptation_length, *lengths])
    segments = [data[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]
    return (model_id, planes, levels, mode, height, width, coarse, (rows, table), deltas, plan,
            segments)


def describe(data: bytes) -> dict:
    """What a file is made of (checked as :func:`decompress_learned` does before decoding):
    ``levels``, ``table_mode``, ``coarse_bytes`` (the LLCC file), ``table_bytes``,
    ``adaptation_bytes`` (0 without a fit), ``header_bytes`` and ``segments``: one dict per
    segment (``level``, ``pass``, ``colour`` "R", "G", "B" or "grey", ``bytes``,
    ``values``)."""
    (_, planes, levels, mode, height, width, coarse, _, _, plan, segments) = _parse(data, None)
    names = ("grey",) if planes == 1 else tuple("RGB"[c] for c in COLOUR_ORDER)
    described = [{"level": level, "pass": k, "colour": names[c], "bytes": len(segment),
                  "values": shape[0] * shape[1]}
                 for (level, k, shape), c, segment in zip(
                     [entry for entry in plan for _ in names],
                     [c for _ in plan for c in range(len(names))], segments, strict=True)]
    section = _HEADER.unpack_from(data)[-1]
    adaptation = _ADAPTATION_LENGTH.unpack_from(data, _HEADER.size)[0] if data[4] == 2 else 0
    return {"levels": levels, "table_mode": mode, "coarse_bytes": len(coarse),
            "table_bytes": section, "adaptation_bytes": adaptation, "segments": described,
            "header_bytes": len(data) - len(coarse) - section - adaptation
            - sum(map(len, segments))}


def decompress_learned(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Bytes of a file from :func:`compress_learned` -> the uint8 image, bit for bit.

    Raises :class:`~course_lib.codecs.lossless.LosslessFileError` for any file it cannot
    decode (see the module docstring); ``max_pixels`` overrides the pixel limit.
    """
    (model_id, planes, levels, mode, height, width, coarse, (rows, table), deltas, plan,
     segments) = _parse(data, max_pixels)
    shapes = _shapes(height, width, levels)
    image = lossless.decompress_lossless(coarse, max_pixels)
    expected = shapes[-1] if planes == 1 else (*shapes[-1], 3)
    if image.shape != expected:
        raise LosslessFileError(f"the file's coarsest image is {image.shape}, not {expected}: "
                                "corrupted file")
    model = shipped_model(model_id)
    if deltas is not None:
        model = adapted_model(model, deltas)
    grey = planes == 1
    channels = (1,) if grey else COLOUR_ORDER
    if mode == 0:
        table = coding_table()
    streams = iter(segments)

    def read(coding, positions):
        if mode == 0:
            indexes = coding.fixed
        else:
            indexes = rows[next(positions) * CONTEXTS + coding.context]
            if np.any(indexes < 0):
                raise LosslessFileError("the file's stream uses a context that has no table: "
                                        "corrupted file; re-encode the original image")
        try:
            residuals = decode_with_indexes(next(streams), indexes, table)
        except DecodeError as error:
            raise LosslessFileError(f"{error}; re-encode the original image") from None
        if residuals.size and (residuals.min() < -128 or residuals.max() > 127):
            raise LosslessFileError("the file's stream holds an escape, which this coder never "
                                    "writes: corrupted file; re-encode the original image")
        return _values(residuals, coding, mode)

    for level in reversed(range(levels)):  # the coarsest first
        phases = [image]
        for k in range(3):
            target_shape = phase_shape(*shapes[level], PHASES[k + 1])
            if (level, k, target_shape) in plan:
                positions = iter(range(len(channels)))
                values = _code_pass(model, phases, k, target_shape, channels,
                                    lambda coding, p=positions: read(coding, p))
                values = values[..., 0] if grey else values[..., np.argsort(channels)]
            else:
                values = np.zeros((*target_shape, *image.shape[2:]), np.uint8)
            phases.append(values)
        image = polyphase_merge(phases, *shapes[level])
    return image
