"""The course's predictive lossless coder: LOCO-I / JPEG-LS ideas with the course's rANS.

Pipeline (encoder; the decoder runs it backwards):

1. *Colour transform*: RGB becomes JPEG 2000's reversible colour transform (RCT), in integers
   and exactly invertible: ``Y = (R + 2G + B) >> 2`` (0..255), ``U = B - G`` and
   ``V = R - G`` (-255..255); back: ``G = Y - ((U + V) >> 2)``, ``R = V + G``, ``B = U + G``
   (:func:`forward_rct`, :func:`inverse_rct`). A greyscale image is one plane as it is.
2. *Prediction*: every pixel ``x`` of a plane is predicted by the median edge detector (MED)
   of JPEG-LS from its left ``a``, upper ``b`` and upper-left ``c`` neighbours:
   ``min(a, b)`` if ``c >= max(a, b)``, ``max(a, b)`` if ``c <= min(a, b)``, else
   ``a + b - c`` (:func:`med`, :func:`predict`). V's prediction adds ``(w * e_U) >> 3``, its
   pixel's U residual times a weight ``w`` in 0..7 that the encoder picks per image (U and V
   residuals are correlated, about 0.4 on Kodak; the weight saves 0.5 %). The residual
   ``x - prediction`` is taken modulo the plane's number of levels M (256 for Y and grey, 511
   for U and V) into ``-(M // 2) .. M - 1 - M // 2`` (JPEG-LS's modular reduction).
3. *Contexts*: each residual is coded with the table of its context, computed from
   already-decoded pixels only (``d`` is the upper-right neighbour). The *activity*
   ``|d - b| + |b - c| + |c - a| + 2|e_a| + |e_b| + |e_c| + |e_d|`` (``e_n`` the residual at
   neighbour ``n``), plus, for U and V, twice the residual magnitudes of the earlier planes at
   the same pixel, falls in one of :data:`NUM_ACTIVITIES` classes (:data:`ACTIVITY_BOUNDS`);
   the *shape*, ``sign(a - c) + sign(b - c)`` (5 values) with ``sign(d - b)`` (3), in one of
   :data:`NUM_SHAPES`. The context is ``activity * NUM_SHAPES + shape``, 150 per plane.
   Every plane has its own tables; which contexts share one is the *context set*
   (:data:`CONTEXT_SETS`): a table per context, per activity class, or one per plane. The
   encoder counts the exact cost of each, tables included, and takes the cheapest: a table
   per context on Kodak (3.09 bits per subpixel, against 3.21 with a table per activity
   class and 3.42 with one per plane), per activity class from about 256 x 256 pixels down,
   one per plane below about 64 x 64.
4. *Tables*: the encoder counts each table's residuals, rounds every count in the range
   from the table's smallest to its largest residual to a half-power of two, a *level*
   (0 for none, else ``1 + round(2 log2 count)``), and stores the levels as a *table section*
   (zlib-compressed, about 1.6 % of a Kodak file). Encoder and decoder turn levels into the
   same integer CDFs (precision 16, every value in the range at least frequency 1, plus the
   escape symbol of a :class:`~course_lib.entropy.CdfTable`, never used) with integer
   arithmetic only: the bytes are the contract.
5. *Entropy coding*: rANS (``constriction``'s ``AnsCoder``, fed exactly our integer tables by
   :func:`course_lib.entropy.fast.constriction_model`).

Decoding order and tiles. A pixel needs its left, upper-left, upper and upper-right neighbours,
so the pixels with the same ``2 * row + column`` (a *step*) depend only on earlier steps and are
decoded together with numpy, not one by one. The image is cut into tiles of ``tile x tile``
pixels (default :data:`DEFAULT_TILE`) that are predicted independently (a tile's first row and
column see no pixels of other tiles; this costs about 0.2 % on Kodak against tiles of 1024)
and run in lockstep, so a decoder takes at most ``3 * tile`` numpy steps whatever the image's
shape: a 1 x 10^6 image decodes as fast as a square one. Inside one step, the stream holds the
planes in order, each as its contexts in increasing order, each context as its pixels in the
order of :func:`step_pixels`; the encoder pushes them in reverse (rANS is a stack).

Borders (inside a tile): the first pixel sees ``a = b = c = d =`` the middle level (128 for Y
and grey, 0 for U and V); the rest of the first row sees ``b = c = d = a``; the first column
sees ``a = c = b`` (the pixel above); the last column sees ``d = b``. The residuals of missing
neighbours count as 0.

File layout (all integers big-endian)::

    offset size  field
    0      4     magic b"LLCC" (Lossless Course Codec)
    4      1     format version (1)
    5      1     planes: 1 (greyscale, no transform) or 3 (RGB through the RCT)
    6      1     context set: index into CONTEXT_SETS (0..2)
    7      1     V's weight w (0..7; 0 for greyscale)
    8      2     tile size (16..1024)
    10     4     image height H (>= 1)
    14     4     image width W (>= 1)
    18     4     length T of the table section
    22     4     length S of the stream (a multiple of 4)
    26     T     table section: zlib of, for every plane and each of the set's tables in
                 order (150, 10 or 1), a 2-byte count n of residual values (0: no pixel uses
                 this table), then if n > 0 the first value (2 bytes, signed) and the n
                 levels, each as its difference from the previous one (the first from 0) in
                 a signed byte
    26+T   S     rANS stream: 32-bit words, little-endian; after the pixels (in decoding
                 order) come the CRC-32 of the image's bytes as two 16-bit symbols
    end-4  4     CRC-32 of everything before it

``compress_lossless(image) -> bytes`` takes a uint8 greyscale ``(H, W)`` or RGB ``(H, W, 3)``
array of any size; ``decompress_lossless(bytes) -> image`` gives it back bit for bit.
Measured on Kodak with the other lossless codecs in ``benchmarks/lossless_kodak.py``.

A decoder treats a file as hostile and checks it before it computes anything from it, in this
order: the length (header and checksum at least), the magic, the version, the CRC-32 of the
file; then the header: 1 or 3 planes, a known context set, a weight in range (0 for grey), a
tile size in range, an image of 1 .. :data:`~course_lib.images.MAX_PIXELS` pixels
(``max_pixels=`` or ``$COURSE_MAX_PIXELS`` raise it), section lengths that fill the file
exactly, a stream of whole words that does not end in a zero word; then the table section: it
must inflate to no more than the largest tables need (no zip bomb) and parse exactly, every
range inside its plane's residuals; then the counts the levels stand for must add up to the
declared pixels in every plane (a level pins a count within a factor of 2**0.25 either way),
and the stream must be long enough for them (every value costs ``-log2 p`` of its table,
times the least count its level allows: about 84 % of a real Kodak stream). While decoding:
no context without a table, no escape symbol, no colour outside 0..255; at the end the coder
must be empty and the pixels' CRC-32 must match. A constant image really does take a few
bytes, so work is bounded by the declared size, which the pixel limit bounds: at most ``3 *
tile`` numpy steps, about 1.5 microseconds and 25 bytes of memory a pixel to decode (40 to
encode), so 2 to 3 minutes at :data:`~course_lib.images.MAX_PIXELS`. Every problem raises
:class:`LosslessFileError` (a ``ValueError``) with what to do.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import constriction
import numpy as np

from ..entropy.cdf import DEFAULT_PRECISION, CdfTable, check_stream_length
from ..entropy.errors import DecodeError
from ..entropy.fast import constriction_model
from ..images import ImageError, check_pixel_count

MAGIC = b"LLCC"
VERSION = 1
_HEADER = struct.Struct(">4sBBBBHIIII")
_CRC = struct.Struct(">I")

DEFAULT_TILE = 256
MIN_TILE, MAX_TILE = 16, 1024
PRECISION = DEFAULT_PRECISION  # 16: every table's frequencies sum to 2**16

# Activity class k holds activities in [ACTIVITY_BOUNDS[k-1], ACTIVITY_BOUNDS[k]).
ACTIVITY_BOUNDS = np.array([2, 4, 7, 11, 16, 24, 35, 50, 75])
NUM_ACTIVITIES = ACTIVITY_BOUNDS.size + 1
NUM_SHAPES = 15  # the signs of (a - c) + (b - c), 5 values, times the sign of d - b
NUM_CONTEXTS = NUM_ACTIVITIES * NUM_SHAPES  # per plane
# Context sets: which contexts share a table. The encoder picks the set that makes the
# smallest file (tables included): small images cannot pay for 150 tables a plane.
CONTEXT_SETS = ("activity x shape", "activity", "one per plane")
_SHARED = (np.arange(NUM_CONTEXTS), np.arange(NUM_CONTEXTS) // NUM_SHAPES,
           np.zeros(NUM_CONTEXTS, np.int64))  # context -> its table in each set

_LUMA, _CHROMA = (0, 256), (-255, 511)  # (lowest level, number of levels M) of a plane
# Levels 0..55: 1 + round(2 log2 count), capped there (counts above 2**27 are rounded down),
# so that the integer CDF arithmetic below stays within int64 for every file.
MAX_LEVEL = 55
MAX_WEIGHT = 7  # V is predicted as MED + (weight * U's residual) >> 3, weight 0..7
_CHUNK = 1 << 18  # whole-image passes take this many pixels at a time
_SAMPLE = 1 << 20  # V's weight is chosen on about this many pixels


class LosslessFileError(ValueError):
    """A file that this codec cannot decode; the message says why and what to do."""


# --- colour transform and predictor ---------------------------------------------------------


def forward_rct(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``(..., 3)`` RGB -> int16 ``(3, ...)`` planes Y (0..255), U = B - G, V = R - G."""
    r, g, b = (rgb[..., k].astype(np.int16) for k in range(3))
    return np.stack([(r + 2 * g + b) >> 2, b - g, r - g])


def inverse_rct(planes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`forward_rct`: int ``(3, ...)`` -> int32 ``(..., 3)`` RGB (0..255 for
    planes that came from :func:`forward_rct`)."""
    y, u, v = (plane.astype(np.int32) for plane in planes)
    g = y - ((u + v) >> 2)
    return np.stack([v + g, g, u + g], axis=-1)


def med(a, b, c) -> np.ndarray:
    """The median edge detector of JPEG-LS, elementwise on integer arrays."""
    a, b, c = np.asarray(a), np.asarray(b), np.asarray(c)
    low, high = np.minimum(a, b), np.maximum(a, b)
    return np.where(c >= high, low, np.where(c <= low, high, a + b - c))


def _wrap(residual: np.ndarray, plane: tuple[int, int]) -> np.ndarray:
    """``residual`` modulo the plane's M, into ``-(M // 2) .. M - 1 - M // 2``."""
    levels = plane[1]
    return (residual + levels // 2) % levels - levels // 2


def _neighbours(flat: np.ndarray, height: int, width: int, tile: int):
    """Indexes of the neighbours of pixels ``flat`` (row-major indexes) into a plane of
    ``height * width + 1`` entries, whose last one holds a stand-in value.

    Returns (a, b, c, d): where to read the pixel values, by the border rules of the module
    docstring; and (ea, eb, ec, ed): where to read the neighbours' residual magnitudes (the
    stand-in, 0, for a neighbour outside the tile).
    """
    rows, cols = np.divmod(flat, width)
    left = cols % tile > 0
    up = rows % tile > 0
    right = up & (cols % tile < tile - 1) & (cols < width - 1)
    upleft = up & left
    outside = height * width
    ea = np.where(left, flat - 1, outside)
    eb = np.where(up, flat - width, outside)
    ec = np.where(upleft, flat - width - 1, outside)
    ed = np.where(right, flat - width + 1, outside)
    a = np.where(left, ea, eb)
    b = np.where(up, eb, a)
    c = np.where(upleft, ec, b)
    d = np.where(right, ed, b)
    return (a, b, c, d), (ea, eb, ec, ed)


def _predict_and_context(values, magnitudes, cross, flat, height, width, tile):
    """MED prediction (int32) and context (0..NUM_CONTEXTS-1) of the pixels ``flat``.

    ``values``: the plane, flat with its stand-in last; ``magnitudes``: its residual
    magnitudes likewise (stand-in 0); ``cross``: the summed residual magnitudes of the earlier
    planes (None for the first plane).
    """
    (ia, ib, ic, id_), (ea, eb, ec, ed) = _neighbours(flat, height, width, tile)
    a, b, c, d = (values[index].astype(np.int32) for index in (ia, ib, ic, id_))
    activity = (np.abs(d - b) + np.abs(b - c) + np.abs(c - a) + 2 * magnitudes[ea]
                + magnitudes[eb] + magnitudes[ec] + magnitudes[ed])
    if cross is not None:
        activity += 2 * cross[flat]
    shape = (np.sign(a - c) + np.sign(b - c) + 2) * 3 + np.sign(d - b) + 1
    context = np.searchsorted(ACTIVITY_BOUNDS, activity, side="right") * NUM_SHAPES + shape
    return med(a, b, c), context


def predict(plane: np.ndarray, tile: int = DEFAULT_TILE, stand_in: int = 128) -> np.ndarray:
    """MED predictions (int32, shape of ``plane``) of a whole plane ``(H, W)`` by the border
    rules of the module docstring; ``stand_in`` is what a tile's first pixel sees (128 for Y
    and grey, 0 for U and V)."""
    plane = np.asarray(plane)
    height, width = plane.shape
    values = np.append(plane.reshape(-1).astype(np.int16), np.int16(stand_in))
    return _predict(values, np.arange(height * width), height, width, tile).reshape(height, width)


def _predict(values, flat, height, width, tile) -> np.ndarray:
    """MED predictions (int32) of the pixels ``flat`` of a plane stored as in
    :func:`_predict_and_context`."""
    neighbours = _neighbours(flat, height, width, tile)[0][:3]
    return med(*(values[index].astype(np.int32) for index in neighbours))


def _middle(plane: tuple[int, int]) -> int:
    return plane[0] + plane[1] // 2


def _group_by_context(contexts: np.ndarray):
    """The stream's order inside one step and plane: contexts ascending, pixels in step
    order within a context. Returns (order, contexts in use, their pixel counts)."""
    order = np.argsort(contexts, kind="stable")
    counts = np.bincount(contexts, minlength=NUM_CONTEXTS)
    used = np.flatnonzero(counts)
    return order, used, counts[used]


def step_pixels(step: int, height: int, width: int, tile: int) -> np.ndarray:
    """Row-major indexes of the pixels decoded together at ``step``: those whose position in
    their tile ``(u, v)`` has ``2u + v == step``, tile after tile (row of tiles first), each
    tile's by increasing u."""
    tile_h, tile_w = min(tile, height), min(tile, width)
    u = np.arange(max(0, -(-(step - tile_w + 1) // 2)), min(tile_h - 1, step // 2) + 1)
    v = step - 2 * u
    rows = (np.arange(0, height, tile)[:, None] + u)[:, None, :]  # (tiles down, 1, len(u))
    cols = (np.arange(0, width, tile)[:, None] + v)[None, :, :]  # (1, tiles across, len(u))
    flat = rows * width + cols
    return flat[(rows < height) & (cols < width)]


def num_steps(height: int, width: int, tile: int) -> int:
    return 2 * (min(tile, height) - 1) + min(tile, width)


# --- tables ---------------------------------------------------------------------------------


def _level_weights() -> np.ndarray:
    """Integer weight of each table byte: 0 -> 0, q -> about 1000 * 2**((q - 1) / 2)."""
    q = np.arange(1, MAX_LEVEL + 1) - 1
    return np.concatenate([[0], np.where(q % 2, 1414, 1000) << (q // 2)]).astype(np.int64)


_WEIGHTS = _level_weights()


def _count_levels(counts: np.ndarray) -> np.ndarray:
    """Levels of residual counts (0 for 0, else 1 + round(2 log2 count), at most
    :data:`MAX_LEVEL`)."""
    levels = np.zeros(counts.size, np.uint8)
    seen = counts > 0
    levels[seen] = np.minimum(1 + np.rint(2 * np.log2(counts[seen])), MAX_LEVEL)
    return levels


def cdf_from_levels(levels: np.ndarray) -> np.ndarray:
    """Integer CDF (precision :data:`PRECISION`) of n residual values and the escape, which
    this coder never sends: every symbol gets 1 + its share of the rest, in integers."""
    weights = np.append(_WEIGHTS[levels], 0)
    total, size = 1 << PRECISION, weights.size
    freqs = 1 + weights * (total - size) // weights.sum()
    freqs[np.argmax(freqs)] += total - freqs.sum()
    return np.concatenate([[0], np.cumsum(freqs)])


@dataclass
class _Tables:
    """Per (plane, context): the table index (-1: unused); the tables; their levels."""

    index: np.ndarray  # (planes, NUM_CONTEXTS) int
    table: CdfTable | None
    levels: list[np.ndarray]  # table k's levels


def _build_tables(entries: list[list[tuple[int, np.ndarray] | None]], context_set: int
                  ) -> _Tables:
    """Tables from ``entries[plane][shared]`` = (first value, levels) or None, ``shared`` the
    tables of the context set."""
    stored = np.full((len(entries), len(entries[0])), -1, dtype=np.int64)
    cdfs, offsets, levels = [], [], []
    for plane, row in enumerate(entries):
        for shared, entry in enumerate(row):
            if entry is not None:
                stored[plane, shared] = len(cdfs)
                cdfs.append(cdf_from_levels(entry[1]))
                offsets.append(entry[0])
                levels.append(entry[1])
    index = stored[:, _SHARED[context_set]]
    table = None
    if cdfs:
        width = max(cdf.size for cdf in cdfs) + 1
        padded = np.full((len(cdfs), width), 1 << PRECISION, dtype=np.int64)
        for row, cdf in zip(padded, cdfs, strict=True):
            row[: cdf.size] = cdf
        table = CdfTable(padded, [cdf.size - 1 for cdf in cdfs], offsets, PRECISION)
    return _Tables(index, table, levels)


def table_section(entries: list[list[tuple[int, np.ndarray] | None]]) -> bytes:
    """The file's table section (see the module docstring) of ``entries``."""
    raw = bytearray()
    for row in entries:
        for entry in row:
            if entry is None:
                raw += struct.pack(">H", 0)
                continue
            first, levels = entry
            steps = np.diff(levels.astype(np.int16), prepend=0).astype(np.uint8)  # mod 256
            raw += struct.pack(">Hh", levels.size, first) + steps.tobytes()
    return zlib.compress(bytes(raw), 9)


def _check_counts(tables: _Tables, pixels: int, stream_bytes: int) -> None:
    """Refuse tables that do not count ``pixels`` pixels in every plane, and a stream too
    short for what they count.

    A level L stands for a count c with ``2 log2 c`` within 0.5 of ``L - 1``, so the tables
    bound each plane's pixel count; and each value's pixels cost at least its count's lower
    bound times its ``-log2 p``.
    """
    low = [np.where(levels > 0, np.exp2((levels - 1.5) / 2), 0.0) for levels in tables.levels]
    high = [np.where(levels == MAX_LEVEL, np.inf, np.where(
        levels > 0, np.exp2((levels - 0.5) / 2), 0.0)) for levels in tables.levels]
    for plane, row in enumerate(tables.index):
        used = np.unique(row[row >= 0])  # contexts can share a table
        least = sum(low[k].sum() for k in used) * (1 - 1e-9)
        most = sum(high[k].sum() for k in used) * (1 + 1e-9)
        if not least <= pixels <= most:
            raise LosslessFileError(f"the file's tables count {least:,.0f} to {most:,.0f} "
                                    f"pixels in plane {plane}, but its header declares "
                                    f"{pixels:,}: corrupted file; re-encode the original")
    bits = sum(counts @ _code_lengths(tables.table.cdf(k)) for k, counts in enumerate(low))
    try:
        check_stream_length(stream_bytes, bits, "pixels")
    except DecodeError as error:
        raise LosslessFileError(f"{error}; re-encode the original image") from None


def read_table_section(section: bytes, ranges: list[tuple[int, int]], per_range: int
                       ) -> list[list[tuple[int, np.ndarray] | None]]:
    """The entries of a table section (zlib-compressed), every field checked: ``per_range``
    entries for each ``(lowest, highest)`` residual range of ``ranges``, each ``None`` (an
    unused table) or ``(first residual, levels)``. Shared by the learned coder's per-image
    tables (:mod:`course_lib.codecs.lossless_learned`)."""
    limit = sum(per_range * (4 + high - low + 1) for low, high in ranges)  # all at full width
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(section, limit + 1)
    except zlib.error:
        raise LosslessFileError("the file's table section is not valid zlib data: corrupted "
                                "file; re-encode the original image") from None
    if len(raw) > limit or not inflater.eof or inflater.unused_data:
        raise LosslessFileError("the file's table section is too long or does not end where "
                                "its length says: corrupted file; re-encode the original")
    entries, position = [], 0
    for low, high in ranges:
        row = []
        for _ in range(per_range):
            if position + 2 > len(raw):
                raise LosslessFileError("the file's table section ends early: corrupted file")
            (count,) = struct.unpack_from(">H", raw, position)
            position += 2
            if count == 0:
                row.append(None)
                continue
            if position + 2 + count > len(raw):
                raise LosslessFileError("the file's table section ends early: corrupted file")
            (first,) = struct.unpack_from(">h", raw, position)
            steps = np.frombuffer(raw, np.int8, count, position + 2)
            levels = np.cumsum(steps, dtype=np.int64)
            position += 2 + count
            if first < low or first + count - 1 > high or levels.min() < 0 or (
                    levels.max() > MAX_LEVEL) or levels.max() == 0:
                raise LosslessFileError("the file's table section holds an impossible table: "
                                        "corrupted file; re-encode the original image")
            row.append((first, levels.astype(np.uint8)))
        entries.append(row)
    if position != len(raw):
        raise LosslessFileError("the file's table section has extra bytes: corrupted file")
    return entries


def _parse_tables(section: bytes, planes: list[tuple[int, int]], context_set: int
                  ) -> _Tables:
    """The tables of a file's table section, every field checked."""
    per_plane = int(_SHARED[context_set].max()) + 1
    # the wrapped residuals of each plane: -(levels // 2) .. levels - 1 - levels // 2
    ranges = [(-(info[1] // 2), info[1] - 1 - info[1] // 2) for info in planes]
    return _build_tables(read_table_section(section, ranges, per_plane), context_set)


# --- the coder ------------------------------------------------------------------------------


def _planes_of(image: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Image -> int16 planes (P, H, W) and each plane's (lowest level, levels)."""
    if image.ndim == 2:
        return image[None].astype(np.int16), [_LUMA]
    return forward_rct(image), [_LUMA, _CHROMA, _CHROMA]


def _plogp(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    return float((counts * np.log2(counts)).sum())


def _choose_weight(differences: np.ndarray, residuals_u: np.ndarray, cross: np.ndarray) -> int:
    """The weight w (0..MAX_WEIGHT) of U's residual in V's prediction ``MED + (w e_U) >> 3``
    that leaves V the smallest residual entropy, conditioned on a context of U's and Y's
    residual magnitudes at the pixel (an estimate: the coder's contexts depend on w), on
    about a million pixels at most (every k-th)."""
    sample = slice(None, None, 1 + differences.size // _SAMPLE)
    differences, residuals_u = differences[sample], residuals_u[sample].astype(np.int32)
    contexts = np.searchsorted(ACTIVITY_BOUNDS, 2 * cross[sample], side="right")
    best, best_bits = 0, np.inf
    for weight in range(MAX_WEIGHT + 1):
        residuals = _wrap(differences - ((weight * residuals_u) >> 3), _CHROMA)
        joint = np.bincount(contexts * _CHROMA[1] + residuals - _CHROMA[0],
                            minlength=NUM_ACTIVITIES * _CHROMA[1]).reshape(NUM_ACTIVITIES, -1)
        bits = _plogp(joint.sum(axis=1)) - _plogp(joint)
        if bits < best_bits - 1e-9:
            best, best_bits = weight, bits
    return best


def _checksum_symbols(image: np.ndarray) -> np.ndarray:
    crc = zlib.crc32(np.ascontiguousarray(image).data)  # no copy of the pixels
    return np.array([crc >> 16, crc & 0xFFFF], dtype=np.int32)


def _check_image(image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3
                                                         and array.shape[2] == 3)):
        raise ImageError(
            f"the lossless coder takes uint8 greyscale (H, W) or RGB (H, W, 3) arrays, got "
            f"dtype {array.dtype} and shape {array.shape}; load files with "
            "course_lib.images.load_image (mode='RGB' or 'L'), which also drops transparency")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"cannot code an empty image of shape {array.shape}")
    if array.shape[0] >= 1 << 32 or array.shape[1] >= 1 << 32:
        raise ImageError(f"image of shape {array.shape} is too large for the file format")
    return array


def _residuals_and_contexts(planes: np.ndarray, infos, tile: int):
    """The encoder's whole-image pass: every pixel's wrapped residual (int16, (P, H * W)) and
    context (uint8, (P, H * W)), and V's weight (:func:`_choose_weight`; 0 without V)."""
    count, height, width = planes.shape
    size = height * width
    residuals = np.empty((count, size), np.int16)
    contexts = np.empty((count, size), np.uint8)
    cross, weight = None, 0
    for plane, info in enumerate(infos):
        values = np.append(planes[plane].reshape(-1), np.int16(_middle(info)))
        differences = values[:-1].astype(np.int32)
        for part in _chunks(size):
            differences[part] -= _predict(values, part, height, width, tile)
        if plane == 2:  # V: predicted from U's residual as well (see the module docstring)
            weight = _choose_weight(differences, residuals[1], cross)
            differences -= (weight * residuals[1].astype(np.int32)) >> 3
        residuals[plane] = _wrap(differences, info)
        magnitudes = np.append(np.abs(residuals[plane]), np.int16(0))
        for part in _chunks(size):
            contexts[plane, part] = _predict_and_context(values, magnitudes, cross, part,
                                                         height, width, tile)[1]
        cross = magnitudes[:-1] if cross is None else cross + magnitudes[:-1]
    return residuals, contexts, weight


def residuals_and_contexts(image: np.ndarray, tile: int = DEFAULT_TILE):
    """The encoder's residuals (int16) and contexts (uint8), each ``(planes, H * W)`` in
    row-major order, of a uint8 greyscale or RGB image: planes Y, U, V (or grey), as
    :func:`compress_lossless` codes them (notebook 09 measures their entropies)."""
    planes, infos = _planes_of(_check_image(image))
    residuals, contexts, _ = _residuals_and_contexts(planes, infos, tile)
    return residuals, contexts


def _chunks(size: int):
    """Row-major pixel indexes 0 .. size - 1, :data:`_CHUNK` at a time."""
    return (np.arange(start, min(size, start + _CHUNK)) for start in range(0, size, _CHUNK))


def _histograms(residuals: np.ndarray, contexts: np.ndarray, infos) -> list[np.ndarray]:
    """Per plane, (NUM_CONTEXTS, M) counts of each wrapped residual in each context."""
    histograms = []
    for plane, (_, levels) in enumerate(infos):
        histogram = np.zeros(NUM_CONTEXTS * levels, np.int64)
        for part in _chunks(residuals.shape[1]):
            keys = contexts[plane, part].astype(np.int64) * levels + residuals[plane, part]
            histogram += np.bincount(keys + levels // 2, minlength=histogram.size)
        histograms.append(histogram.reshape(NUM_CONTEXTS, levels))
    return histograms


def _choose_tables(histograms: list[np.ndarray], sets) -> tuple[int, _Tables, bytes]:
    """Of the context ``sets``, the one whose file is smallest: (set, its tables, its table
    section). The size counted is exact up to rANS's last few bytes: the section, and
    ``-log2 p`` of its table for every value."""
    best = None
    for context_set in sets:
        shared = _SHARED[context_set]
        entries, bits = [], 0.0
        for histogram in histograms:
            levels = histogram.shape[1]
            counts = np.zeros((int(shared.max()) + 1, levels), np.int64)
            np.add.at(counts, shared, histogram)
            row = [table_entry(table_counts, levels) for table_counts in counts]
            for table_counts, entry in zip(counts, row, strict=True):
                if entry is not None:
                    start = entry[0] + levels // 2
                    seen = table_counts[start : start + entry[1].size]
                    bits += seen @ _code_lengths(cdf_from_levels(entry[1]))
            entries.append(row)
        section = table_section(entries)
        bits += 8 * len(section)
        if best is None or bits < best[0]:
            best = (bits, context_set, entries, section)
    _, context_set, entries, section = best
    return context_set, _build_tables(entries, context_set), section


def _code_lengths(cdf: np.ndarray) -> np.ndarray:
    """Bits of each value of a table (its escape left out)."""
    return PRECISION - np.log2(np.diff(cdf[:-1]).astype(np.float64))


def table_entry(counts: np.ndarray, levels: int) -> tuple[int, np.ndarray] | None:
    """(first residual, levels) of one table's residual counts, None if it has none."""
    seen = np.flatnonzero(counts)
    if seen.size == 0:
        return None
    return int(seen[0]) - levels // 2, _count_levels(counts[seen[0] : seen[-1] + 1])


def compress_lossless(image: np.ndarray, *, tile: int = DEFAULT_TILE,
                      context_set: int | None = None) -> bytes:
    """uint8 greyscale ``(H, W)`` or RGB ``(H, W, 3)`` -> the bytes of a complete file.

    ``tile``: the side of the independently predicted tiles (:data:`MIN_TILE` ..
    :data:`MAX_TILE`); larger tiles code a little smaller and decode a little slower.
    ``context_set``: an index into :data:`CONTEXT_SETS` to use those tables, or None (the
    default) for whichever makes the smallest file.
    """
    array = _check_image(image)
    if not isinstance(tile, (int, np.integer)) or not MIN_TILE <= tile <= MAX_TILE:
        raise ValueError(f"tile must be an integer in {MIN_TILE}..{MAX_TILE}, got {tile!r}")
    if context_set is not None and context_set not in range(len(CONTEXT_SETS)):
        raise ValueError(f"context_set must be None or 0..{len(CONTEXT_SETS) - 1} (see "
                         f"CONTEXT_SETS), got {context_set!r}")
    sets = range(len(CONTEXT_SETS)) if context_set is None else [context_set]
    height, width = array.shape[:2]
    planes, infos = _planes_of(array)
    residuals, contexts, weight = _residuals_and_contexts(planes, infos, tile)
    context_set, tables, section = _choose_tables(_histograms(residuals, contexts, infos),
                                                  sets)
    models = [constriction_model(tables.table.cdf(k), PRECISION)
              for k in range(tables.table.num_tables)]
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(_checksum_symbols(array), constriction.stream.model.Uniform(1 << 16))
    for step in reversed(range(num_steps(height, width, tile))):  # a stack: push backwards
        flat = step_pixels(step, height, width, tile)
        if flat.size == 0:  # odd steps of a one-column image
            continue
        for plane in reversed(range(len(infos))):
            order, used, counts = _group_by_context(contexts[plane, flat])
            pixels = flat[order]
            used_tables = tables.index[plane, used]
            symbols = (residuals[plane, pixels]
                       - np.repeat(tables.table.offsets[used_tables], counts)).astype(np.int32)
            chunks = np.split(symbols, np.cumsum(counts)[:-1])
            for table, chunk in zip(reversed(used_tables.tolist()), reversed(chunks),
                                    strict=True):
                coder.encode_reverse(chunk, models[table])
    stream = coder.get_compressed().astype("<u4").tobytes()
    header = _HEADER.pack(MAGIC, VERSION, len(infos), context_set, weight, tile, height, width,
                          len(section), len(stream))
    body = header + section + stream
    return body + _CRC.pack(zlib.crc32(body))


@dataclass
class FileInfo:
    """A file's fields (:func:`parse`); ``tables`` as the decoder uses them."""

    planes: int
    context_set: int
    weight: int
    tile: int
    height: int
    width: int
    tables: _Tables
    stream: bytes


def check_version_and_checksum(data: bytes, version: int, supported: int, what: str) -> None:
    """The checks every course lossless file passes before its fields are read: a format
    version this course_lib reads, and the CRC-32 of everything before the last 4 bytes.
    Shared by the learned coder's files (:mod:`course_lib.codecs.lossless_learned`)."""
    if version != supported:
        newer = "newer than this course_lib: update course_lib" if version > supported else (
            "unknown: re-encode the original image")
        raise LosslessFileError(f"{what} version {version} (this course_lib reads version "
                                f"{supported}) is {newer}")
    (stored_crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) != stored_crc:
        raise LosslessFileError("the file is corrupted or truncated (checksum mismatch); "
                                "re-encode or re-download it")


def parse(data: bytes, max_pixels: int | None = None) -> FileInfo:
    """Check a file and split it into its fields, tables parsed (no pixels decoded yet): the
    checks of the module docstring that come before decoding. Raises
    :class:`LosslessFileError`."""
    data = bytes(data)
    if len(data) < _HEADER.size + _CRC.size:
        raise LosslessFileError(f"file too short ({len(data)} bytes) to be a course lossless "
                                "file; it is truncated or something else")
    (magic, version, planes, context_set, weight, tile, height, width, section_length,
     stream_length) = _HEADER.unpack_from(data)
    if magic == b"LLCL":
        raise LosslessFileError("this is a learned lossless file: decode it with "
                                "course_lib.codecs.lossless_learned (the command line's "
                                "decode reads both kinds)")
    if magic != MAGIC:
        raise LosslessFileError("not a course lossless file (wrong magic bytes); for PNG, "
                                "WebP or JPEG XL use course_lib.images.load_image, for the "
                                "learned codec course_lib.codecs.learned")
    check_version_and_checksum(data, version, VERSION, "lossless file format")
    if planes not in (1, 3):
        raise LosslessFileError(f"the file declares {planes} planes (1 or 3 exist): corrupted "
                                "file")
    if context_set >= len(CONTEXT_SETS):
        raise LosslessFileError(f"the file's context set {context_set} does not exist (0.."
                                f"{len(CONTEXT_SETS) - 1}): corrupted file")
    if weight > MAX_WEIGHT or (planes == 1 and weight):
        raise LosslessFileError(f"the file's chroma weight {weight} is impossible: corrupted "
                                "file")
    if not MIN_TILE <= tile <= MAX_TILE:
        raise LosslessFileError(f"the file's tile size {tile} is outside {MIN_TILE}.."
                                f"{MAX_TILE}: corrupted file")
    if height == 0 or width == 0:
        raise LosslessFileError("the file declares an empty image: corrupted file")
    check_pixel_count(height, width, max_pixels, LosslessFileError, "the file's image")
    if _HEADER.size + section_length + stream_length + _CRC.size != len(data):
        raise LosslessFileError("the file's section lengths do not add up to its size: "
                                "corrupted file")
    if stream_length == 0 or stream_length % 4 or data[-_CRC.size - 4 : -_CRC.size] == bytes(4):
        raise LosslessFileError("the file's stream is not whole nonzero-ended 32-bit words: "
                                "corrupted file")
    section = data[_HEADER.size : _HEADER.size + section_length]
    stream = data[_HEADER.size + section_length : -_CRC.size]
    infos = [_LUMA] if planes == 1 else [_LUMA, _CHROMA, _CHROMA]
    tables = _parse_tables(section, infos, context_set)
    _check_counts(tables, height * width, len(stream))
    return FileInfo(planes, context_set, weight, tile, height, width, tables, stream)


def decompress_lossless(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Bytes of a file from :func:`compress_lossless` -> the uint8 image, bit for bit.

    Raises :class:`LosslessFileError` for any file it cannot decode (see the module docstring);
    ``max_pixels`` overrides the pixel limit (:func:`course_lib.images.check_pixel_count`).
    """
    info = parse(data, max_pixels)
    height, width, tile, tables = info.height, info.width, info.tile, info.tables
    infos = [_LUMA] if info.planes == 1 else [_LUMA, _CHROMA, _CHROMA]
    size = height * width
    models = [constriction_model(tables.table.cdf(k), PRECISION)
              for k in range(tables.table.num_tables)]
    values = np.empty((len(infos), size + 1), np.int16)  # decoded planes, stand-ins last
    magnitudes = np.zeros((len(infos), size + 1), np.int16)  # |residual|, 0 last
    values[:, -1] = [_middle(plane_info) for plane_info in infos]
    cross = np.zeros(size + 1, np.int16) if len(infos) > 1 else None
    coder = constriction.stream.stack.AnsCoder(
        np.frombuffer(info.stream, dtype="<u4").astype(np.uint32))
    for step in range(num_steps(height, width, tile)):
        flat = step_pixels(step, height, width, tile)
        if flat.size == 0:  # odd steps of a one-column image
            continue
        residuals = None
        for plane, (lowest, levels) in enumerate(infos):
            predictions, contexts = _predict_and_context(
                values[plane], magnitudes[plane], cross if plane else None, flat, height,
                width, tile)
            if plane == 2:  # V: U's residuals at the same pixels count too
                predictions += (info.weight * residuals) >> 3
            residuals = _decode_residuals(coder, models, tables, plane, contexts)
            values[plane, flat] = lowest + (predictions + residuals - lowest) % levels
            magnitudes[plane, flat] = np.abs(residuals)
            if plane < len(infos) - 1:
                cross[flat] += magnitudes[plane, flat]
    checksum = coder.decode(constriction.stream.model.Uniform(1 << 16), 2)
    image = _image_of([plane[:-1].reshape(height, width) for plane in values])
    if not coder.is_empty() or np.any(checksum != _checksum_symbols(image)):
        raise LosslessFileError("the file's pixels fail their checksum: corrupted file, or "
                                "written by another version of this coder; re-encode it")
    return image


def _decode_residuals(coder, models, tables: _Tables, plane: int, contexts: np.ndarray):
    """One plane of one step: the residuals (int32, in step order) of pixels with these
    contexts, read from ``coder`` in the stream's order (:func:`_group_by_context`)."""
    order, used, counts = _group_by_context(contexts)
    used_tables = tables.index[plane, used]
    if np.any(used_tables < 0):
        raise LosslessFileError("the file's stream uses a context that has no table: "
                                "corrupted file; re-encode the original image")
    symbols, start = np.empty(contexts.size, np.int32), 0
    for table, count in zip(used_tables.tolist(), counts.tolist(), strict=True):
        symbols[start : start + count] = coder.decode(models[table], count)
        start += count
    symbol_tables = np.repeat(used_tables, counts)
    if np.any(symbols >= tables.table.lengths[symbol_tables] - 1):
        raise LosslessFileError("the file's stream holds an escape, which this coder never "
                                "writes: corrupted file; re-encode the original image")
    residuals = np.empty(contexts.size, np.int32)
    residuals[order] = symbols + tables.table.offsets[symbol_tables]
    return residuals


def _image_of(planes: list[np.ndarray]) -> np.ndarray:
    """Decoded planes, each (H, W) -> the uint8 image, through the inverse RCT for three
    planes, a band of rows at a time (the int32 colours of a whole big image would take 12
    bytes a pixel)."""
    if len(planes) == 1:
        return planes[0].astype(np.uint8)  # 0..255 by construction
    height, width = planes[0].shape
    image = np.empty((height, width, 3), np.uint8)
    rows = max(1, _CHUNK // width)
    for top in range(0, height, rows):
        rgb = inverse_rct(np.stack([plane[top : top + rows] for plane in planes]))
        if rgb.min() < 0 or rgb.max() > 255:
            raise LosslessFileError("the file decodes to impossible colours: corrupted file; "
                                    "re-encode the original image")
        image[top : top + rows] = rgb
    return image
