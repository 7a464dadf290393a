"""rANS (range asymmetric numeral systems), written to be read: exact integer arithmetic on
Python ints, real bytes out.

The whole message lives in one integer, the *state* ``x``. Coding symbol ``s`` with frequency
``f`` out of ``2**precision`` (slots ``start .. start + f - 1``) maps

    x  ->  (x // f) * 2**precision + start + x % f,

which grows ``x`` by a factor ``2**precision / f``, i.e. by ``-log2 p(s)`` bits. Decoding reads
the slot ``x % 2**precision``, finds the symbol owning it and inverts the map exactly. To keep
``x`` finite it stays in ``[L, L * 2**32)`` with ``L = 2**32`` (a 64-bit state): before encoding,
a state that would overflow pushes its low 32 bits out as a word; after decoding, a state below
``L`` pulls one word back in. (These are the parameters of ``constriction``'s ``AnsCoder``.)

rANS is a stack: the decoder pops symbols in the reverse order of the encoder's pushes. So the
encoder runs over the message backwards, and the decoder forwards.

:func:`encode_with_indexes` / :func:`decode_with_indexes` code a stream of values, each with a
table of its own (the latents of notebook 06's factorized prior), with the escape scheme of the
fast coder (:mod:`course_lib.entropy.fast`), whose streams they match in size to a word.

Byte format: the final 64-bit state, then the 32-bit words in the order the decoder reads them,
all little-endian. The encoder starts from ``x = L + c``, where ``c`` is the CRC-32 of the
message (its symbols as little-endian int64), so a decoder that has decoded every symbol must be
back at exactly ``L`` plus the CRC-32 of what it decoded, with no words left. The start state
costs at most one bit. What is caught:

- always: truncated data and extra words (decoding reads exactly the encoder's words), and
  damage after which the decoder still ends in the encoder's start state but with one symbol
  changed, the way rANS lets damage through: a flipped bit that moves a slot into another
  symbol's slots at the same offset (with a start state of ``L`` alone, 1 flip in 64 of a
  1-symbol message of a 2-symbol alphabet would get through). CRC-32 catches every change
  within 32 consecutive bits, and symbols below ``2**32`` differ only in their low 4 bytes;
- otherwise, all but about ``2**-32`` of damaged streams: the decoder would have to end, by
  chance, at ``L`` plus the CRC-32 of the wrong symbols.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .cdf import (
    BYPASS_BITS,
    DEFAULT_PRECISION,
    MAX_BYPASS_GROUPS,
    CdfTable,
    bypass_groups,
    check_cdf,
    check_stream_length,
    join_bypass_groups,
    quantize_pmf,
)
from .errors import DecodeError

WORD_BITS = 32
WORD_MASK = (1 << WORD_BITS) - 1
STATE_LOW = 1 << 32  # L: the state lives in [L, L * 2**WORD_BITS)
STATE_BITS = 64
CHUNK = 1 << 20  # passes over long messages take this many values at a time


class StaticModel:
    """A fixed integer CDF (see :mod:`course_lib.entropy.cdf`) used for every symbol."""

    def __init__(self, cdf):
        self._cdf, self.precision = check_cdf(cdf)
        self.alphabet_size = self._cdf.size - 1

    @classmethod
    def from_pmf(cls, pmf, precision: int = DEFAULT_PRECISION) -> StaticModel:
        return cls(quantize_pmf(pmf, precision))

    def cdf(self) -> np.ndarray:
        """(alphabet_size + 1,) int64 CDF for the next symbol."""
        return self._cdf

    def update(self, symbol: int) -> None:
        """A static model learns nothing."""

    def copy(self) -> StaticModel:
        return self


class AdaptiveModel:
    """Counts of the symbols seen so far, each starting at 1, quantised before every symbol.

    Encoder and decoder update the counts with the same symbols in the same order, so they
    see the same CDFs without ever sending the model. The cost over the empirical entropy is
    about ``(K - 1) / 2 * log2(n)`` bits for n symbols, the price of learning K - 1 numbers.
    """

    def __init__(self, alphabet_size: int, precision: int = DEFAULT_PRECISION):
        if alphabet_size < 2:
            raise ValueError("an adaptive model needs an alphabet of at least 2 symbols")
        self.alphabet_size = int(alphabet_size)
        self.precision = precision
        self.counts = np.ones(self.alphabet_size, dtype=np.int64)
        quantize_pmf(self.counts, precision)  # validate precision and alphabet size now

    def cdf(self) -> np.ndarray:
        return quantize_pmf(self.counts, self.precision)

    def update(self, symbol: int) -> None:
        self.counts[symbol] += 1

    def copy(self) -> AdaptiveModel:
        fresh = AdaptiveModel(self.alphabet_size, self.precision)
        fresh.counts = self.counts.copy()
        return fresh


def encode_step(x: int, start: int, freq: int, precision: int, words: list[int]) -> int:
    """Push one symbol (slots ``start .. start + freq - 1``) onto state ``x``; may emit a word."""
    if x >= freq << (STATE_BITS - precision):  # the result would leave [L, L * 2**32)
        words.append(x & WORD_MASK)
        x >>= WORD_BITS
    return (x // freq << precision) + start + x % freq


def decode_step(x: int, cdf: np.ndarray, precision: int) -> tuple[int, int]:
    """Pop one symbol from state ``x``: returns ``(symbol, x)``; the caller refills ``x``."""
    slot = x & ((1 << precision) - 1)
    symbol = int(np.searchsorted(cdf, slot, side="right")) - 1
    start, freq = int(cdf[symbol]), int(cdf[symbol + 1] - cdf[symbol])
    return symbol, freq * (x >> precision) + slot - start


def message_crc(symbols) -> int:
    """CRC-32 of a message: its symbols as little-endian int64 (a :data:`CHUNK` at a time,
    so that a long message is never copied whole)."""
    flat = np.asarray(symbols).reshape(-1)
    crc = 0
    for start in range(0, flat.size, CHUNK):
        crc = zlib.crc32(flat[start : start + CHUNK].astype("<i8").tobytes(), crc)
    return crc


def _symbol_array(symbols) -> np.ndarray:
    symbols = np.asarray(symbols)
    if symbols.ndim != 1 or (symbols.size and symbols.dtype.kind not in "iu"):
        raise ValueError("symbols must be a 1-D integer array")
    return symbols.astype(np.int64)


def rans_encode(symbols, model: StaticModel | AdaptiveModel) -> bytes:
    """Encode a 1-D array of symbols in ``0 .. model.alphabet_size - 1`` to bytes.

    The model is not changed (an adaptive model is copied first).
    """
    symbols = _symbol_array(symbols)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= model.alphabet_size):
        raise ValueError(f"symbols must lie in 0..{model.alphabet_size - 1}")
    # The decoder sees the models in message order; record them in that order first ...
    model = model.copy()
    starts, freqs = [], []
    for symbol in symbols.tolist():
        cdf = model.cdf()
        starts.append(int(cdf[symbol]))
        freqs.append(int(cdf[symbol + 1] - cdf[symbol]))
        model.update(symbol)
    # ... then push the symbols last to first, so that they pop first to last.
    x, words = STATE_LOW + message_crc(symbols), []
    for start, freq in zip(reversed(starts), reversed(freqs), strict=True):
        x = encode_step(x, start, freq, model.precision, words)
    words.append(x & WORD_MASK)
    words.append(x >> WORD_BITS)
    return np.array(words[::-1], dtype="<u4").tobytes()


def rans_decode(data: bytes, num_symbols: int, model: StaticModel | AdaptiveModel) -> np.ndarray:
    """Decode ``num_symbols`` symbols made by :func:`rans_encode` with the same model.

    Returns (num_symbols,) int64. Raises :class:`DecodeError` on truncated or corrupted data
    (what is caught: see the module docstring).
    """
    if len(data) % 4 or len(data) < 8:
        raise DecodeError(f"rANS data is whole 32-bit words, at least 2; got {len(data)} bytes")
    words = np.frombuffer(data, dtype="<u4").tolist()
    x = words[0] << WORD_BITS | words[1]
    if x < STATE_LOW:
        raise DecodeError("corrupted rANS data: the initial state is too small")
    position = 2
    model = model.copy()
    symbols = np.empty(num_symbols, dtype=np.int64)
    for i in range(num_symbols):
        cdf = model.cdf()
        symbols[i], x = decode_step(x, cdf, model.precision)
        if x < STATE_LOW:
            if position == len(words):
                raise DecodeError(f"truncated rANS data: ran out of words at symbol {i}")
            x = x << WORD_BITS | words[position]
            position += 1
        model.update(int(symbols[i]))
    if x != STATE_LOW + message_crc(symbols) or position != len(words):
        raise DecodeError(
            "rANS data does not end where it should: corrupted, truncated, or not made "
            "with this model and symbol count"
        )
    return symbols


# -- a stream of values with a table each (the learned codec's latents), readable ------------
_BYPASS_CDF = quantize_pmf(np.ones(1 << BYPASS_BITS))
_COUNT = struct.Struct("<I")


class TableWalk:
    """A model for :func:`rans_encode`: symbol ``i`` of the message uses table ``indexes[i]``
    of a :class:`~course_lib.entropy.cdf.CdfTable`; the symbols after the last index are 4-bit
    bypass groups.

    The readable coder asks its model for a CDF before each symbol and calls ``update``
    after it, so walking a list of tables is all a per-latent model needs.
    """

    def __init__(self, table: CdfTable, indexes: np.ndarray, position: int = 0):
        self.table, self.indexes, self.position = table, indexes, position
        self.precision = table.precision
        self.alphabet_size = max(int(table.lengths.max()), _BYPASS_CDF.size - 1)

    def cdf(self) -> np.ndarray:
        if self.position < self.indexes.size:
            return self.table.cdf(self.indexes[self.position])
        return _BYPASS_CDF

    def update(self, symbol: int) -> None:
        self.position += 1

    def copy(self) -> TableWalk:
        return TableWalk(self.table, self.indexes, self.position)


def encode_with_indexes(values, indexes, table: CdfTable) -> bytes:
    """Code integer ``values`` (value ``i`` with CDF ``indexes[i]``) with the readable rANS.

    Same escape scheme as the fast path (:func:`course_lib.entropy.fast.encode_with_indexes`):
    table symbols, then one 4-bit group count per escaped value, then the groups. The stream
    starts with the number of bypass symbols (4 bytes) so the decoder knows the message
    length; the fast path instead ends with a 4-byte checksum, so the sizes agree to a word.
    """
    flat_indexes = table.check_indexes(indexes).reshape(-1)
    symbols, overflow = table.split_values(values, indexes)
    counts, groups = bypass_groups(overflow)
    message = np.concatenate([symbols, counts, groups])
    return (_COUNT.pack(counts.size + groups.size)
            + rans_encode(message, TableWalk(table, flat_indexes)))


def decode_with_indexes(data: bytes, indexes, table: CdfTable) -> np.ndarray:
    """Inverse of :func:`encode_with_indexes`: int64 values with the shape of ``indexes``.

    Raises :class:`DecodeError` for a stream it cannot decode, checking before it decodes that
    the header's count of bypass symbols is possible (at most 16 per value: a group count and
    15 groups) and that the stream is long enough for all the symbols (each bypass symbol
    costs 4 bits, each value at least its table's :meth:`~CdfTable.minimum_bits`).
    """
    if len(data) < _COUNT.size:
        raise DecodeError("readable stream too short for its header")
    flat_indexes = table.check_indexes(indexes).reshape(-1)
    (extra,) = _COUNT.unpack_from(data)
    if extra > (1 + MAX_BYPASS_GROUPS) * flat_indexes.size:
        raise DecodeError(f"readable stream: its header announces {extra} bypass symbols, more "
                          f"than {flat_indexes.size} values can have")
    check_stream_length(len(data) - _COUNT.size,
                        table.minimum_bits()[flat_indexes].sum() + BYPASS_BITS * extra)
    message = rans_decode(data[_COUNT.size:], flat_indexes.size + extra,
                               TableWalk(table, flat_indexes))
    symbols = message[: flat_indexes.size]
    num_escaped = int(np.count_nonzero(symbols == table.lengths[flat_indexes] - 1))
    counts = message[flat_indexes.size : flat_indexes.size + num_escaped]
    groups = message[flat_indexes.size + num_escaped :]
    if num_escaped + int(counts.sum()) != extra:
        raise DecodeError("readable stream: escape counts do not match its header")
    return table.merge_values(symbols, indexes, join_bypass_groups(counts, groups))
