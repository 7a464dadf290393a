"""Huffman codes: exact round trips, H <= L < H + 1, optimality against brute force, the
canonical code of RFC 1951, JPEG's length limit, and clean errors on bad bytes."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.entropy import (
    DecodeError,
    HuffmanCode,
    canonical_codewords,
    entropy,
    huffman_code_lengths,
)


def _random_pmf(rng, size):
    p = rng.random(size) ** rng.uniform(0.5, 6)  # from flat to very skewed
    p[rng.random(size) < 0.2] = 0
    p[rng.integers(size)] += 1e-3
    return p / p.sum()


def _is_prefix_free(codewords):
    words = sorted(w for w in codewords if w)
    return all(not b.startswith(a) for a, b in zip(words, words[1:], strict=False))


def test_mean_length_within_entropy_bounds_on_many_distributions():
    rng = np.random.default_rng(0)
    for _ in range(300):
        p = _random_pmf(rng, int(rng.integers(2, 300)))
        code = HuffmanCode.from_frequencies(p)
        h, mean = entropy(p), code.mean_length(p)
        used = code.lengths[p > 0]
        if np.count_nonzero(p) > 1:
            assert h - 1e-9 <= mean < h + 1, (h, mean)
            assert np.sum(2.0 ** -used) == pytest.approx(1.0)  # a full tree: Kraft equality
        assert _is_prefix_free(code.codewords)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 64), count=st.integers(0, 400))
def test_round_trip(seed, size, count):
    rng = np.random.default_rng(seed)
    p = _random_pmf(rng, size)
    code = HuffmanCode.from_frequencies(p)
    symbols = rng.choice(size, count, p=p)
    data = code.encode(symbols)
    assert len(data) == -(-int(code.lengths[symbols].sum()) // 8)
    np.testing.assert_array_equal(code.decode(data, count), symbols)


def test_optimal_against_brute_force():
    """No prefix code (any lengths obeying Kraft) beats Huffman's mean length."""
    rng = np.random.default_rng(1)
    for _ in range(40):
        size = int(rng.integers(2, 7))
        p = rng.random(size) ** 3 + 1e-3
        p /= p.sum()
        best = min(
            float(np.dot(p, lengths))
            for lengths in itertools.product(range(1, size), repeat=size)
            if np.sum(2.0 ** -np.array(lengths)) <= 1
        )
        assert HuffmanCode.from_frequencies(p).mean_length(p) == pytest.approx(best, abs=1e-12)


def test_canonical_codes_match_rfc1951_example():
    # RFC 1951 section 3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) for A..H
    codes = canonical_codewords([3, 3, 3, 3, 3, 2, 4, 4])
    assert codes == ["010", "011", "100", "101", "110", "00", "1110", "1111"]


def test_single_symbol_and_unused_symbols():
    code = HuffmanCode.from_frequencies([0, 7, 0])
    assert code.lengths.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(code.decode(code.encode([1, 1, 1]), 3), [1, 1, 1])
    with pytest.raises(ValueError, match="no codeword"):
        code.encode([0])
    with pytest.raises(ValueError):
        huffman_code_lengths([0, 0])


def test_length_limit_jpeg_annex_k():
    rng = np.random.default_rng(2)
    fibonacci = np.array([1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597,
                          2584, 4181, 6765, 10946, 17711], dtype=float)  # the deepest trees
    for freqs in [fibonacci, rng.random(162) ** 8, 2.0 ** -np.arange(40)]:
        free = huffman_code_lengths(freqs)
        assert free.max() > 16
        limited = huffman_code_lengths(freqs, max_length=16)
        assert limited.max() == 16
        assert np.sum(2.0 ** -limited[limited > 0]) == pytest.approx(1.0)
        p = freqs / freqs.sum()
        assert np.dot(p, free) <= np.dot(p, limited) < np.dot(p, free) + 0.05
        code = HuffmanCode(limited)
        symbols = rng.choice(freqs.size, 500)
        np.testing.assert_array_equal(code.decode(code.encode(symbols), 500), symbols)
    with pytest.raises(ValueError, match="do not fit"):
        huffman_code_lengths(np.ones(9), max_length=3)


def test_bad_bytes_raise_and_never_hang():
    rng = np.random.default_rng(3)
    p = _random_pmf(rng, 20)
    code = HuffmanCode.from_frequencies(p)
    symbols = rng.choice(20, 1000, p=p)
    data = code.encode(symbols)
    with pytest.raises(DecodeError, match="truncated"):
        code.decode(data[:-2], 1000)
    with pytest.raises(DecodeError, match="padding"):
        code.decode(data + b"\xff", 1000)
    with pytest.raises(DecodeError, match="no codeword"):
        HuffmanCode([1, 2, 0, 0]).decode(b"\xff", 1)  # '11' spells nothing in {0, 10}
    outcomes = set()
    for _ in range(200):  # random bytes: a clean error or some symbols, never a hang
        garbage = rng.integers(0, 256, rng.integers(0, 300)).astype(np.uint8).tobytes()
        try:
            outcomes.add(len(code.decode(garbage, 1000)))
        except DecodeError:
            outcomes.add("DecodeError")
    assert outcomes <= {1000, "DecodeError"}
