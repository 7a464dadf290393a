"""Quantised CDF tables: the integer models that encoder and decoder share exactly.

An entropy coder needs every probability as an integer frequency ``freq / 2**precision`` so
that encoder and decoder do identical integer arithmetic. :func:`quantize_pmf` turns a float
model into such a table with one fixed procedure, in float64:

1. ``c = cumsum(pmf)`` left to right, ``scale = (2**precision - K) / c[-1]``;
2. ``cdf[i] = floor(c[i - 1] * scale) + i`` for ``i = 0..K-1`` (with ``c[-1] := 0``), and
   ``cdf[K] = 2**precision``.

Every symbol gets frequency ``>= 1`` (so every symbol stays codable, even one the model calls
impossible) and the frequencies sum to exactly ``2**precision``. This is the fast
quantisation of ``constriction.stream.model.Categorical(pmf, perfect=False)``; at precision 24
the two agree bit for bit (a test checks it).

Floats are only used to *build* a table. Once built, the integers are the contract: ship them
with a model (as CompressAI keeps its CDF buffers in the state dict) rather than rebuilding them
from floats on another machine.

:class:`CdfTable` stacks many such CDFs for the learned codec, where each of hundreds of
thousands of values is coded with table ``indexes[i]``. Each table codes the values
``offset .. offset + K - 2`` directly; its last symbol ``K - 1`` is an *escape*: a value outside
that range is coded as the escape followed by its overflow in 4-bit "bypass" groups (the
scheme of CompressAI's rANS coder), so no value is ever uncodable.

A stream of values is never shorter than the information of its likeliest message: value ``i``
costs at least :meth:`CdfTable.minimum_bits` of its table. :func:`check_stream_length` turns
that into the decoders' first check, so that a few bytes claiming millions of values are
refused before anything is allocated for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from .errors import DecodeError

DEFAULT_PRECISION = 16
MAX_PRECISION = 24  # the precision of constriction's coders, which run our fast path
BYPASS_BITS = 4  # escaped values are sent in groups of this many raw bits
MAX_BYPASS_GROUPS = (1 << BYPASS_BITS) - 1  # the group count is itself one 4-bit group
# An rANS stream holds its message's information, up to the rounding of its final state.
STREAM_SLACK_BITS = 64


def _check_precision(precision: int) -> int:
    if not isinstance(precision, (int, np.integer)) or not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be an integer in 1..{MAX_PRECISION}, got {precision!r}")
    return int(precision)


def quantize_pmf(pmf, precision: int = DEFAULT_PRECISION) -> np.ndarray:
    """Integer CDF of a float pmf by the procedure in the module docstring.

    Args:
        pmf: (K,) non-negative weights, K >= 2 (they need not sum to one).
        precision: frequencies sum to ``2**precision``.

    Returns:
        cdf: int64 (K + 1,), ``cdf[0] = 0``, ``cdf[K] = 2**precision``, strictly increasing;
        symbol ``s`` owns the slots ``cdf[s] <= slot < cdf[s + 1]``.
    """
    precision = _check_precision(precision)
    pmf = np.asarray(pmf, dtype=np.float64)
    total = 1 << precision
    if pmf.ndim != 1 or not 2 <= pmf.size < total:
        raise ValueError(
            f"pmf must be 1-D with 2 <= K < 2**precision = {total} symbols, got {pmf.shape}"
        )
    if np.any(pmf < 0) or not np.all(np.isfinite(pmf)):
        raise ValueError("pmf must be finite and non-negative")
    cumulative = np.cumsum(pmf)
    if not cumulative[-1] > 0:
        raise ValueError("pmf must have a positive sum")
    scale = (total - pmf.size) / cumulative[-1]
    left = np.concatenate([[0.0], cumulative[:-1]])
    cdf = np.empty(pmf.size + 1, dtype=np.int64)
    cdf[:-1] = np.floor(left * scale).astype(np.int64) + np.arange(pmf.size)
    cdf[-1] = total
    return cdf


def check_cdf(cdf) -> tuple[np.ndarray, int]:
    """Validate an integer CDF (see :func:`quantize_pmf`); return it as int64 and its precision."""
    cdf = np.asarray(cdf)
    if cdf.ndim != 1 or cdf.size < 3 or cdf.dtype.kind not in "iu":
        raise ValueError("a CDF is a 1-D integer array of K + 1 >= 3 entries")
    cdf = cdf.astype(np.int64)
    total = int(cdf[-1])
    precision = total.bit_length() - 1
    if cdf[0] != 0 or total != 1 << precision or np.any(np.diff(cdf) <= 0):
        raise ValueError(
            "a CDF starts at 0, ends at a power of two and strictly increases "
            "(every symbol needs a frequency >= 1)"
        )
    _check_precision(precision)
    return cdf, precision


def bypass_groups(overflow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split non-negative overflows into 4-bit groups, least significant first.

    Returns:
        counts: (E,) number of groups of each overflow (0 for an overflow of 0);
        groups: (sum(counts),) the groups of all overflows, one after the other.
    """
    overflow = np.asarray(overflow, dtype=np.int64)
    if np.any(overflow < 0) or np.any(overflow >> (BYPASS_BITS * MAX_BYPASS_GROUPS)):
        raise ValueError("value too far outside its table to escape-code")
    counts = np.zeros(overflow.shape, dtype=np.int64)
    remaining = overflow.copy()
    while np.any(remaining):  # at most MAX_BYPASS_GROUPS rounds, checked above
        counts += remaining > 0
        remaining >>= BYPASS_BITS
    owner, shift = _group_owners_and_shifts(counts)
    return counts, (overflow[owner] >> shift) & MAX_BYPASS_GROUPS


def _group_owners_and_shifts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every bypass group: the overflow it belongs to and its bit position in it."""
    owner = np.repeat(np.arange(counts.size), counts)
    group_index = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, BYPASS_BITS * group_index


def join_bypass_groups(counts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Inverse of :func:`bypass_groups`: (E,) overflows from their group counts and groups."""
    counts = np.asarray(counts, dtype=np.int64)
    owner, shift = _group_owners_and_shifts(counts)
    overflow = np.zeros(counts.size, dtype=np.int64)
    np.add.at(overflow, owner, np.asarray(groups, dtype=np.int64) << shift)
    return overflow


@dataclass(frozen=True, eq=False)
class CdfTable:
    """A stack of integer CDFs; value ``values[i]`` is coded with CDF ``indexes[i]``.

    Attributes:
        cdfs: int64 (num_tables, max_K + 1); row j is table j's CDF over its ``lengths[j]``
            symbols, padded on the right with ``2**precision``.
        lengths: int64 (num_tables,) symbols K_j of each table, the escape (last) included.
        offsets: int64 (num_tables,) value coded by symbol 0 of each table.
        precision: all frequencies sum to ``2**precision``.
    """

    cdfs: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    precision: int

    def __post_init__(self):
        cdfs = np.asarray(self.cdfs)
        lengths = np.asarray(self.lengths, dtype=np.int64)
        offsets = np.asarray(self.offsets, dtype=np.int64)
        if cdfs.ndim != 2 or lengths.shape != offsets.shape or lengths.shape != cdfs.shape[:1]:
            raise ValueError("cdfs must be (num_tables, width), lengths and offsets (num_tables,)")
        if cdfs.shape[0] == 0 or np.any(lengths < 2) or np.any(lengths >= cdfs.shape[1]):
            raise ValueError("need >= 1 table, each with 2 <= K < cdfs.shape[1] symbols")
        total = 1 << _check_precision(self.precision)
        for row, length in zip(cdfs, lengths, strict=True):
            _, precision = check_cdf(row[: length + 1])
            if precision != self.precision or np.any(row[length:] != total):
                raise ValueError(f"every CDF must end at 2**{self.precision} and pad with it")
        object.__setattr__(self, "cdfs", cdfs.astype(np.int64))
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "offsets", offsets)

    @classmethod
    def from_pmfs(cls, pmfs, offsets, precision: int = DEFAULT_PRECISION, tail_masses=None):
        """Quantise float pmfs (one per table) into a table, each with an escape symbol.

        Args:
            pmfs: sequence of (K_j - 1,) float64 weights of the values
                ``offsets[j] .. offsets[j] + K_j - 2``.
            offsets: (num_tables,) integers.
            tail_masses: (num_tables,) probability of the escape, i.e. of all other values
                (default 0: the escape only gets the minimum frequency 1).
        """
        pmfs = [np.asarray(pmf, dtype=np.float64) for pmf in pmfs]
        tails = np.zeros(len(pmfs)) if tail_masses is None else np.asarray(tail_masses, float)
        if tails.shape != (len(pmfs),) or np.shape(offsets) != (len(pmfs),):
            raise ValueError("need one offset and one tail mass per pmf")
        cdfs = [
            quantize_pmf(np.append(pmf, tail), precision)
            for pmf, tail in zip(pmfs, tails, strict=True)
        ]
        width = max(cdf.size for cdf in cdfs) + 1
        padded = np.full((len(cdfs), width), 1 << precision, dtype=np.int64)
        for row, cdf in zip(padded, cdfs, strict=True):
            row[: cdf.size] = cdf
        return cls(padded, [cdf.size - 1 for cdf in cdfs], np.asarray(offsets), precision)

    @property
    def num_tables(self) -> int:
        return self.cdfs.shape[0]

    def cdf(self, index: int) -> np.ndarray:
        """(lengths[index] + 1,) the CDF of one table without its padding."""
        return self.cdfs[index, : self.lengths[index] + 1]

    def check_indexes(self, indexes) -> np.ndarray:
        """``indexes`` as an integer array, not copied (a learned codec keeps millions of them
        in one byte each), or a ValueError if one names no table."""
        indexes = np.asarray(indexes)
        if indexes.dtype.kind not in "iu":
            raise ValueError(f"indexes must be integers, got dtype {indexes.dtype}")
        if indexes.size and (indexes.min() < 0 or indexes.max() >= self.num_tables):
            raise ValueError(f"indexes must lie in 0..{self.num_tables - 1}")
        return indexes

    def split_values(self, values, indexes) -> tuple[np.ndarray, np.ndarray]:
        """Map values to table symbols; values out of their table's range become the escape.

        Args:
            values, indexes: integer arrays of the same shape (flattened in C order).

        Returns:
            symbols: int64 (N,) in ``0 .. lengths[indexes] - 1``;
            overflow: int64 (E,) for the E escaped values in order: ``2 * d`` for a value
            ``d >= 0`` above the range, ``2 * d - 1`` for one ``d >= 1`` below it.
        """
        values = np.asarray(values)
        indexes = self.check_indexes(indexes)
        if values.shape != indexes.shape or values.dtype.kind not in "iu":
            raise ValueError("values must be integers with the same shape as indexes")
        indexes = indexes.reshape(-1)
        shifted = values.reshape(-1).astype(np.int64) - self.offsets[indexes]
        escape = self.lengths[indexes] - 1
        below, above = shifted < 0, shifted >= escape
        overflow = np.where(below, -2 * shifted - 1, 2 * (shifted - escape))
        return np.where(below | above, escape, shifted), overflow[below | above]

    def merge_values(self, symbols, indexes, overflow) -> np.ndarray:
        """Inverse of :meth:`split_values`: int64 values with the shape of ``indexes``."""
        indexes = self.check_indexes(indexes)
        flat_indexes = indexes.reshape(-1)
        symbols = np.asarray(symbols, dtype=np.int64)
        overflow = np.asarray(overflow, dtype=np.int64)
        escape = self.lengths[flat_indexes] - 1
        escaped = symbols == escape
        shifted = symbols.copy()
        shifted[escaped] = np.where(
            overflow % 2 == 1, -(overflow + 1) // 2, escape[escaped] + overflow // 2
        )
        return (shifted + self.offsets[flat_indexes]).reshape(indexes.shape)

    def minimum_bits(self) -> np.ndarray:
        """(num_tables,) the fewest bits a value coded with each table can cost: ``precision -
        log2`` of the table's largest frequency."""
        return self.precision - np.log2(np.diff(self.cdfs, axis=1).max(axis=1))

    def information_bits(self, values, indexes) -> float:
        """Ideal code length ``-sum log2 p`` of the values, escapes and bypass groups included:
        the size an exact entropy coder approaches."""
        return float(self.bits_per_value(values, indexes).sum())

    def bits_per_value(self, values, indexes) -> np.ndarray:
        """The ideal code length ``-log2 p`` of each value, float64 with the shape of
        ``values``; an escaped value also pays its 4-bit group count and groups."""
        symbols, overflow = self.split_values(values, indexes)
        flat_indexes = self.check_indexes(indexes).reshape(-1)
        freqs = self.cdfs[flat_indexes, symbols + 1] - self.cdfs[flat_indexes, symbols]
        bits = self.precision - np.log2(freqs)
        counts, _ = bypass_groups(overflow)
        escaped = symbols == self.lengths[flat_indexes] - 1
        bits[escaped] += BYPASS_BITS * (1 + counts)
        return bits.reshape(np.shape(values))


def check_stream_length(num_bytes: int, minimum_bits: float, what: str = "values") -> None:
    """Raise :class:`DecodeError` if ``num_bytes`` cannot hold a message of at least
    ``minimum_bits`` bits (plus :data:`STREAM_SLACK_BITS`), e.g. the sum of
    :meth:`CdfTable.minimum_bits` over the values a header announces."""
    if minimum_bits > 8 * num_bytes + STREAM_SLACK_BITS:
        raise DecodeError(f"{num_bytes} bytes cannot hold the {what} expected, which take at "
                          f"least {minimum_bits / 8:,.0f}: truncated or corrupted data")


def gaussian_cdf_table(
    scales, precision: int = DEFAULT_PRECISION, tail_mass: float = 1e-9
) -> CdfTable:
    """One table per scale for a zero-mean Gaussian integrated over unit bins.

    Table j covers ``-r_j .. r_j`` with ``r_j = ceil(scale_j * Q(1 - tail_mass / 2))``
    (Q the Gaussian quantile); the escape carries the remaining mass. This is the scale table
    of a Gaussian conditional entropy model (values are coded relative to their mean).

    Args:
        scales: (num_tables,) positive standard deviations.
    """
    scales = np.asarray(scales, dtype=np.float64)
    if scales.ndim != 1 or scales.size == 0 or np.any(~(scales > 0)):
        raise ValueError("scales must be a non-empty 1-D array of positive numbers")
    radii = np.ceil(scales * -ndtri(tail_mass / 2)).astype(np.int64)
    pmfs, tails = [], []
    for scale, radius in zip(scales, radii, strict=True):
        magnitude = np.abs(np.arange(-radius, radius + 1))
        # the lower tail of the Gaussian is evaluated: 1 - ndtr(x) would lose the small masses
        pmf = ndtr((0.5 - magnitude) / scale) - ndtr((-0.5 - magnitude) / scale)
        pmfs.append(pmf)
        tails.append(2 * ndtr((-0.5 - radius) / scale))
    return CdfTable.from_pmfs(pmfs, -radii, precision, tails)


def log_scale_table(min_scale: float = 0.11, max_scale: float = 256.0, levels: int = 64):
    """(levels,) scales spaced evenly in log between ``min_scale`` and ``max_scale``."""
    if not 0 < min_scale < max_scale or levels < 2:
        raise ValueError("need 0 < min_scale < max_scale and levels >= 2")
    return np.exp(np.linspace(np.log(min_scale), np.log(max_scale), levels))


def scale_indexes(scales, table_scales) -> np.ndarray:
    """Index of the table scale nearest to each ``scale`` in log (geometric midpoints as the
    boundaries; scales beyond the table's ends take its first or last entry). Shape of
    ``scales``, int64.

    Nearest in log, not "the next wider one": coding a Gaussian of scale ``s`` with the table
    for ``s * (1 + d)`` costs about ``d**2`` nats per value whichever side the table lies on,
    and the nearest table halves the largest ``|d|``. With 64 scales 13 % apart, always taking
    the next wider table added about 4 % to the rate of a low-rate image; the nearest one
    adds about 0.1 %.
    """
    table_scales = np.asarray(table_scales, dtype=np.float64)
    boundaries = np.sqrt(table_scales[:-1] * table_scales[1:])
    return np.searchsorted(boundaries, np.asarray(scales, dtype=np.float64),
                           side="left").astype(np.int64)
