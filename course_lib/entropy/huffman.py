"""Huffman codes: optimal prefix codes built by repeatedly merging the two rarest symbols.

A code is fully described by its code *lengths*: the canonical code assigns codewords in
order of (length, symbol), so a file only needs to carry the lengths (as JPEG and DEFLATE do).
The bytes are the concatenated codewords, most significant bit first, the last byte padded
with 1-bits (JPEG's convention).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from .errors import DecodeError


def huffman_code_lengths(freqs, max_length: int | None = None) -> np.ndarray:
    """Code length of every symbol of a Huffman code for the given frequencies.

    Args:
        freqs: (K,) non-negative counts or probabilities; symbols with 0 get no code.
        max_length: optional limit on the code length (JPEG uses 16); the lengths are then
            adjusted by the procedure of JPEG (ITU T.81) Annex K.3, which keeps the code
            complete but may be slightly longer on average than the optimal limited code.

    Returns:
        (K,) int64 lengths, 0 for symbols with frequency 0. A single used symbol gets 1 bit.
    """
    freqs = np.asarray(freqs, dtype=np.float64)
    if freqs.ndim != 1 or np.any(freqs < 0) or not np.all(np.isfinite(freqs)):
        raise ValueError("freqs must be a 1-D array of finite non-negative numbers")
    used = np.flatnonzero(freqs > 0)
    if used.size == 0:
        raise ValueError("at least one symbol needs a positive frequency")
    lengths = np.zeros(freqs.size, dtype=np.int64)
    if used.size == 1:
        lengths[used] = 1
        return lengths
    # A heap of (weight, tie-break, leaves below the node): merging two nodes puts every leaf
    # below them one level deeper. The tie-break counter makes the result deterministic.
    heap = [(freqs[s], int(s), [int(s)]) for s in used]
    heapq.heapify(heap)
    tie_break = freqs.size
    while len(heap) > 1:
        weight_a, _, leaves_a = heapq.heappop(heap)
        weight_b, _, leaves_b = heapq.heappop(heap)
        lengths[leaves_a + leaves_b] += 1
        heapq.heappush(heap, (weight_a + weight_b, tie_break, leaves_a + leaves_b))
        tie_break += 1
    if max_length is not None and lengths.max() > max_length:
        lengths = _limit_lengths(lengths, freqs, max_length)
    return lengths


def _limit_lengths(lengths: np.ndarray, freqs: np.ndarray, max_length: int) -> np.ndarray:
    """JPEG Annex K.3: move codes up from the deepest level until none is deeper than the
    limit, then hand the shortest lengths to the most frequent symbols."""
    used = np.flatnonzero(lengths)
    if max_length < 1 or (1 << max_length) < used.size:
        raise ValueError(f"{used.size} symbols do not fit in codes of at most {max_length} bits")
    count = np.bincount(lengths[used], minlength=lengths.max() + 1)
    deepest = count.size - 1
    while deepest > max_length:
        if count[deepest] == 0:
            deepest -= 1
            continue
        # Two leaves at the bottom share a parent: lift one of them to that parent's level and
        # let the other become the sibling of a leaf split from a shallower level.
        shallower = deepest - 2
        while count[shallower] == 0:
            shallower -= 1
        count[deepest] -= 2
        count[deepest - 1] += 1
        count[shallower + 1] += 2
        count[shallower] -= 1
    by_frequency = used[np.lexsort((used, -freqs[used]))]
    limited = np.zeros_like(lengths)
    limited[by_frequency] = np.repeat(np.arange(count.size), count)
    return limited


def canonical_codewords(lengths) -> list[str]:
    """Canonical codewords as '0'/'1' strings ('' for symbols without a code).

    Symbols sorted by (length, symbol) get consecutive binary numbers, shifted left whenever
    the length grows.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if np.sum(2.0 ** -lengths[lengths > 0]) > 1 + 1e-12:
        raise ValueError("these lengths violate the Kraft inequality: no prefix code has them")
    codewords = [""] * lengths.size
    code, previous_length = 0, 0
    for symbol in sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous_length
        previous_length = int(lengths[symbol])
        codewords[symbol] = format(code, f"0{previous_length}b")
        code += 1
    return codewords


@dataclass(frozen=True, eq=False)
class HuffmanCode:
    """A canonical prefix code, given by its (K,) code lengths (0 = symbol has no code)."""

    lengths: np.ndarray

    def __post_init__(self):
        lengths = np.asarray(self.lengths, dtype=np.int64)
        if lengths.ndim != 1 or np.any(lengths < 0) or not np.any(lengths):
            raise ValueError("lengths must be a 1-D array of non-negative ints, one positive")
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "codewords", canonical_codewords(lengths))
        # Canonical decoding: per length, the first codeword and where its symbols start in
        # the (length, symbol)-sorted list.
        order = sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s))
        count = np.bincount(lengths[order], minlength=lengths.max() + 1)
        first_code, first_index = np.zeros_like(count), np.zeros_like(count)
        code = index = 0
        for length in range(1, count.size):
            code <<= 1
            first_code[length], first_index[length] = code, index
            code += count[length]
            index += count[length]
        object.__setattr__(self, "_sorted_symbols", order)
        object.__setattr__(self, "_count", count.tolist())
        object.__setattr__(self, "_first_code", first_code.tolist())
        object.__setattr__(self, "_first_index", first_index.tolist())

    @classmethod
    def from_frequencies(cls, freqs, max_length: int | None = None) -> HuffmanCode:
        return cls(huffman_code_lengths(freqs, max_length))

    def mean_length(self, pmf) -> float:
        """Expected bits per symbol for symbols drawn from ``pmf`` (K,)."""
        pmf = np.asarray(pmf, dtype=np.float64)
        return float(np.sum(pmf * self.lengths) / pmf.sum())

    def encode(self, symbols) -> bytes:
        """Concatenated codewords of a 1-D integer array, packed MSB first, padded with 1s."""
        symbols = np.asarray(symbols)
        if symbols.ndim != 1 or (symbols.size and symbols.dtype.kind not in "iu"):
            raise ValueError("symbols must be a 1-D integer array")
        if symbols.size and (
            symbols.min() < 0 or symbols.max() >= self.lengths.size
            or np.any(self.lengths[symbols] == 0)
        ):
            raise ValueError("a symbol has no codeword (out of range or frequency 0)")
        bits = "".join(self.codewords[s] for s in symbols.tolist())
        bits += "1" * (-len(bits) % 8)
        return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""

    def decode(self, data: bytes, num_symbols: int) -> np.ndarray:
        """Decode ``num_symbols`` symbols; (num_symbols,) int64.

        Raises :class:`DecodeError` when the data cannot hold ``num_symbols`` codewords (one
        bit each at least: checked before anything is allocated), when the bits run out, spell
        no codeword, or do not end in fewer than 8 padding 1-bits. (A bit flip that still
        spells valid codewords decodes to other symbols: a prefix code has no redundancy to
        notice it.)
        """
        if num_symbols > 8 * len(data):
            raise DecodeError(f"{len(data)} bytes cannot hold {num_symbols} Huffman codewords "
                              "(at least one bit each): truncated or corrupted data")
        bits = format(int.from_bytes(data, "big"), f"0{8 * len(data)}b") if data else ""
        max_length = len(self._count) - 1
        symbols = np.empty(num_symbols, dtype=np.int64)
        position = 0
        for i in range(num_symbols):
            code = 0
            for length in range(1, max_length + 1):
                if position == len(bits):
                    raise DecodeError(f"truncated Huffman data: bits ran out at symbol {i}")
                code = code << 1 | (bits[position] == "1")
                position += 1
                offset = code - self._first_code[length]
                if 0 <= offset < self._count[length]:
                    symbols[i] = self._sorted_symbols[self._first_index[length] + offset]
                    break
            else:
                raise DecodeError(f"corrupted Huffman data: no codeword at symbol {i}")
        padding = bits[position:]
        if len(padding) >= 8 or padding != "1" * len(padding):
            raise DecodeError("Huffman data does not end in < 8 padding 1-bits: corrupted")
        return symbols
