"""The fast path: many values, each coded with its own CDF from a :class:`CdfTable`.

This is what a learned codec calls for hundreds of thousands of latents per image, like
CompressAI's ``encode_with_indexes(symbols, indexes, cdfs, cdf_lengths, offsets)``. The coding
itself runs in ``constriction``'s ``AnsCoder`` (Rust), chosen by measurement
(``benchmarks/entropy_speed.py``, 3e5 latents, 64 tables): it codes at tens of millions of
values per second within 0.01 % of the ideal size, while a vectorised numpy rANS needs many
interleaved lanes to approach that speed, and each lane ends with its own 4-byte state (256
lanes: over 5x slower to decode and 0.8 % larger). ``constriction``'s RangeEncoder is as good; the
AnsCoder is the same algorithm as our readable coder (:mod:`course_lib.entropy.rans`).

``constriction`` is fed exactly our integer tables: its ``Categorical(w, perfect=False)``
quantiser assigns ``cdf[i] = floor(W_i * scale) + i`` (``W`` the cumulative weights), so weights
``w = freq * 2**(24 - precision) - 1`` make ``scale = 1`` and reproduce ``cdf`` scaled to its
24-bit precision without any rounding. The integer table stays the only contract.

Stream layout, in decoding order: the table symbols of all values grouped by table (tables in
increasing index, values in array order within a table); then one 4-bit group count per escaped
value; then all their 4-bit groups (see :mod:`course_lib.entropy.cdf`); then the CRC-32 of
the values (int64 little-endian), as two 16-bit symbols. An rANS decoder that ends in the right
state catches most corruption but not all: a damaged word can change a few symbols and let the
state re-converge. The checksum catches those too (all but about ``2**-32`` of them).

The bytes are ``constriction``'s 32-bit words, little-endian. The caller knows ``indexes`` (and
so the number of values) on both sides, as in a hyperprior codec where they come from the side
information.
"""

from __future__ import annotations

import constriction
import numpy as np

from .cdf import (
    BYPASS_BITS,
    MAX_PRECISION,
    CdfTable,
    bypass_groups,
    check_stream_length,
    join_bypass_groups,
)
from .errors import DecodeError
from .rans import CHUNK, message_crc


def _checksum_symbols(values: np.ndarray) -> np.ndarray:
    """CRC-32 of the values as two 16-bit symbols (high half first)."""
    crc = message_crc(values)
    return np.array([crc >> 16, crc & 0xFFFF], dtype=np.int32)


def constriction_model(cdf, precision: int) -> constriction.stream.model.Categorical:
    """A ``constriction`` model whose 24-bit CDF is exactly ``cdf << (24 - precision)``."""
    weights = np.diff(np.asarray(cdf, dtype=np.int64)) << (MAX_PRECISION - precision)
    return constriction.stream.model.Categorical((weights - 1).astype(np.float64), perfect=False)


def _chunks(size: int):
    """Slices that cover ``0 .. size`` a :data:`~course_lib.entropy.rans.CHUNK` at a time."""
    return [slice(start, start + CHUNK) for start in range(0, size, CHUNK)]


def _table_counts(flat_indexes: np.ndarray, num_tables: int) -> np.ndarray:
    """(num_tables,) how many values use each table (``np.bincount`` would copy all the
    indexes to int64 at once)."""
    return sum((np.bincount(flat_indexes[part].astype(np.int64), minlength=num_tables)
                for part in _chunks(flat_indexes.size)), np.zeros(num_tables, np.int64))


def _groups_by_table(flat_indexes: np.ndarray, counts: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(table, positions in the flat array) for every table in use, tables ascending.

    A counting sort a chunk at a time: one stable ``argsort`` of all the indexes would hold two
    index arrays as long as the message (its result and its scratch space) at once.
    """
    order = np.empty(flat_indexes.size, dtype=np.int64)
    ends = np.cumsum(counts)
    cursors = ends - counts  # where each table's next positions go in `order`
    for part in _chunks(flat_indexes.size):
        keys = flat_indexes[part].astype(np.int64)
        # a stable sort of small unsigned keys is a radix sort in numpy: 10-20x faster than int64
        local = np.argsort(keys.astype(np.uint16 if counts.size <= 1 << 16 else np.int64),
                           kind="stable")
        local_counts = np.bincount(keys, minlength=counts.size)
        local_ends = np.cumsum(local_counts)
        for table in np.flatnonzero(local_counts):
            chosen = local[local_ends[table] - local_counts[table] : local_ends[table]]
            order[cursors[table] : cursors[table] + chosen.size] = chosen + part.start
        cursors += local_counts
    return [(table, order[ends[table] - counts[table] : ends[table]])
            for table in np.flatnonzero(counts)]


def _flat(values, indexes, table: CdfTable) -> tuple[np.ndarray, np.ndarray]:
    """``values`` and ``indexes`` checked and flattened (views where they can be)."""
    values, indexes = np.asarray(values), table.check_indexes(indexes)
    if values.shape != indexes.shape or values.dtype.kind not in "iu":
        raise ValueError("values must be integers with the same shape as indexes")
    return values.reshape(-1), indexes.reshape(-1)


def encode_with_indexes(values, indexes, table: CdfTable) -> bytes:
    """Encode integer ``values`` (any shape), value ``i`` with CDF ``indexes[i]`` of ``table``.

    Values outside a table's range are escape-coded, never refused. Values are mapped to table
    symbols a chunk at a time, so that the memory used beyond the inputs stays a few bytes per
    value.
    """
    flat_values, flat_indexes = _flat(values, indexes, table)
    symbols = np.empty(flat_values.size, dtype=np.int32)  # table symbols are small
    overflow = [np.zeros(0, np.int64)]
    for part in _chunks(flat_values.size):
        symbols[part], part_overflow = table.split_values(flat_values[part], flat_indexes[part])
        overflow.append(part_overflow)
    counts, groups = bypass_groups(np.concatenate(overflow))
    coder = constriction.stream.stack.AnsCoder()
    # A stack: push in the reverse of the decoding order.
    coder.encode_reverse(_checksum_symbols(flat_values),
                         constriction.stream.model.Uniform(1 << 16))
    bypass = constriction.stream.model.Uniform(1 << BYPASS_BITS)
    for raw in (groups, counts):
        if raw.size:
            coder.encode_reverse(raw.astype(np.int32), bypass)
    table_counts = _table_counts(flat_indexes, table.num_tables)
    for index, positions in reversed(_groups_by_table(flat_indexes, table_counts)):
        model = constriction_model(table.cdf(index), table.precision)
        coder.encode_reverse(symbols[positions], model)
    return coder.get_compressed().astype("<u4").tobytes()


def decode_with_indexes(data: bytes, indexes, table: CdfTable) -> np.ndarray:
    """Decode bytes from :func:`encode_with_indexes` given the same ``indexes`` and table.

    Returns int64 values with the shape of ``indexes``. Raises :class:`DecodeError` on
    truncated or corrupted data: data too short for that many values
    (:func:`~course_lib.entropy.cdf.check_stream_length`, checked first), a coder that does not
    end exactly empty, or a checksum that does not match.
    """
    if len(data) % 4:
        raise DecodeError(f"fast-path data is whole 32-bit words; got {len(data)} bytes")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    if words.size and words[-1] == 0:
        raise DecodeError("corrupted fast-path data: it cannot end in a zero word")
    flat_indexes = table.check_indexes(indexes).reshape(-1)
    table_counts = _table_counts(flat_indexes, table.num_tables)
    check_stream_length(len(data), table_counts @ table.minimum_bits())
    coder = constriction.stream.stack.AnsCoder(words)
    values = np.empty(flat_indexes.size, dtype=np.int64)  # table symbols first
    escaped = [np.zeros(0, np.int64)]
    for index, positions in _groups_by_table(flat_indexes, table_counts):
        model = constriction_model(table.cdf(index), table.precision)
        symbols = coder.decode(model, positions.size)
        values[positions] = symbols
        escaped.append(positions[symbols == table.lengths[index] - 1])
    escaped = np.sort(np.concatenate(escaped))  # the escapes in array order
    bypass = constriction.stream.model.Uniform(1 << BYPASS_BITS)
    counts = coder.decode(bypass, escaped.size) if escaped.size else np.zeros(0, np.int64)
    num_groups = int(np.sum(counts, dtype=np.int64))  # at most 15 per escape: bounded
    groups = coder.decode(bypass, num_groups) if num_groups else np.zeros(0, np.int64)
    checksum = coder.decode(constriction.stream.model.Uniform(1 << 16), 2)
    overflow = join_bypass_groups(counts, groups)
    for part in _chunks(values.size):  # symbols -> values, in place
        first, last = np.searchsorted(escaped, [part.start, part.start + CHUNK])
        values[part] = table.merge_values(values[part], flat_indexes[part],
                                          overflow[first:last])
    if not coder.is_empty() or np.any(checksum != _checksum_symbols(values)):
        raise DecodeError(
            "fast-path data failed its checks: corrupted, truncated, or not made with these "
            "indexes and this table"
        )
    return values.reshape(np.shape(indexes))
