"""The fast path: exact round trips with per-value tables and escapes, the constriction model
is exactly our integer table, sizes match -sum log2 p and the readable coder, clean errors."""

import constriction
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.entropy import (
    CdfTable,
    DecodeError,
    StaticModel,
    decode_with_indexes,
    encode_with_indexes,
    fast,
    gaussian_cdf_table,
    log_scale_table,
    rans,
    rans_encode,
    scale_indexes,
)
from course_lib.entropy.fast import constriction_model

TABLE_SCALES = log_scale_table(0.11, 256, 64)
GAUSSIAN_TABLE = gaussian_cdf_table(TABLE_SCALES)


def _latents(seed, shape):
    """Rounded Gaussian latents with per-value scales, and each value's table index."""
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.uniform(np.log(0.05), np.log(100), shape))
    values = np.round(rng.normal(0, scales)).astype(np.int32)
    return values, scale_indexes(scales, TABLE_SCALES)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from([(0,), (1,), (7, 5), (3, 8, 9)]),
       outliers=st.integers(0, 5))
def test_round_trip_with_escapes(seed, shape, outliers):
    values, indexes = _latents(seed, shape)
    flat = values.reshape(-1)
    rng = np.random.default_rng(seed)
    for _ in range(min(outliers, flat.size)):  # values far outside their tables
        flat[rng.integers(flat.size)] = rng.integers(-(2**31), 2**31 - 1)
    data = encode_with_indexes(values, indexes, GAUSSIAN_TABLE)
    decoded = decode_with_indexes(data, indexes, GAUSSIAN_TABLE)
    assert decoded.shape == values.shape
    np.testing.assert_array_equal(decoded, values)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), precision=st.integers(10, 24))
def test_round_trip_on_random_tables(seed, precision):
    rng = np.random.default_rng(seed)
    pmfs = [rng.random(rng.integers(1, 40)) ** 3 for _ in range(6)]
    table = CdfTable.from_pmfs(pmfs, rng.integers(-30, 30, 6), precision)
    indexes = rng.integers(0, 6, 2000)
    values = rng.integers(-40, 70, 2000)
    data = encode_with_indexes(values, indexes, table)
    np.testing.assert_array_equal(decode_with_indexes(data, indexes, table), values)


def test_chunks_change_nothing(monkeypatch):
    """Values are mapped to table symbols, checksummed and merged back a chunk at a time, with
    one-byte indexes kept as they are: chunk boundaries (here through escapes) must not show in
    the bytes or the values."""
    values, indexes = _latents(3, (5000,))
    values[[0, 999, 1000, 4999]] = [700, -900, 5000, -30000]
    indexes = indexes.astype(np.uint8)
    assert GAUSSIAN_TABLE.check_indexes(indexes) is indexes
    whole = encode_with_indexes(values, indexes, GAUSSIAN_TABLE)
    monkeypatch.setattr(fast, "CHUNK", 1000)
    monkeypatch.setattr(rans, "CHUNK", 1000)
    assert encode_with_indexes(values, indexes, GAUSSIAN_TABLE) == whole
    np.testing.assert_array_equal(decode_with_indexes(whole, indexes, GAUSSIAN_TABLE), values)


def test_constriction_codes_exactly_our_table():
    """Pushing one symbol onto an empty AnsCoder leaves the state at its left cumulative
    frequency: it must be ours, scaled from 16 to constriction's 24 bits."""
    cdf = GAUSSIAN_TABLE.cdf(20)
    model = constriction_model(cdf, 16)
    for symbol in range(cdf.size - 1):
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(np.array([symbol], dtype=np.int32), model)
        words = coder.get_compressed()
        assert (int(words[0]) if words.size else 0) == cdf[symbol] << 8


def test_size_matches_ideal_on_3e5_latents():
    values, indexes = _latents(0, (300_000,))
    values[:10] = 10_000  # a few escapes
    data = encode_with_indexes(values, indexes, GAUSSIAN_TABLE)
    ideal_bytes = GAUSSIAN_TABLE.information_bits(values, indexes) / 8
    assert ideal_bytes <= len(data) <= ideal_bytes * 1.001 + 16  # 4 of them are the CRC


def test_size_matches_the_readable_coder():
    rng = np.random.default_rng(5)
    pmf = rng.dirichlet(np.full(30, 0.4))
    table = CdfTable.from_pmfs([pmf], [0])
    symbols = rng.choice(30, 20_000, p=pmf)
    fast = len(encode_with_indexes(symbols, np.zeros_like(symbols), table))
    readable = len(rans_encode(symbols, StaticModel(table.cdf(0))))
    assert abs(fast - readable) <= 0.01 * readable


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 3000), mode=st.floats(0.5, 1 - 1e-9))
def test_the_length_check_never_refuses_a_real_stream(seed, size, mode):
    """Streams of the likeliest values are the shortest there are: still long enough."""
    rng = np.random.default_rng(seed)
    tail = (1 - mode) / 2
    table = CdfTable.from_pmfs([[tail, mode, tail], [0.5, 0.5]], [-1, 0])
    for index in range(2):  # referee: the cheapest single value, escapes included
        cheapest = min(table.information_bits(np.array([value]), np.array([index]))
                       for value in range(-3, 4))
        assert table.minimum_bits()[index] == pytest.approx(cheapest, rel=1e-12)
    indexes = rng.integers(0, 2, size)
    values = np.zeros(size, np.int64)
    data = encode_with_indexes(values, indexes, table)
    assert 8 * len(data) >= table.minimum_bits()[indexes].sum()
    np.testing.assert_array_equal(decode_with_indexes(data, indexes, table), values)
    with pytest.raises(DecodeError, match="cannot hold"):
        decode_with_indexes(data, np.ones(8 * len(data) + 65, np.int64), table)


def test_bad_data_raises_and_never_hangs():
    values, indexes = _latents(1, (1500,))
    values[:3] = [500, -500, 7000]
    data = encode_with_indexes(values, indexes, GAUSSIAN_TABLE)
    rng = np.random.default_rng(6)
    trials = [data[: rng.integers(len(data))] for _ in range(50)]
    for _ in range(150):
        corrupted = bytearray(data)
        corrupted[rng.integers(len(data))] ^= 1 << rng.integers(8)
        trials.append(bytes(corrupted))
    trials += [rng.integers(0, 256, rng.integers(0, 3000)).astype(np.uint8).tobytes()
               for _ in range(50)]
    trials.append(data + data[-4:])
    for trial in trials:  # the CRC catches every one of these
        with pytest.raises(DecodeError):
            decode_with_indexes(trial, indexes, GAUSSIAN_TABLE)
    with pytest.raises(DecodeError):  # other indexes: the data was not made for them
        decode_with_indexes(data, np.roll(indexes, 1), GAUSSIAN_TABLE)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        encode_with_indexes(np.zeros(3, int), np.zeros(4, int), GAUSSIAN_TABLE)
    with pytest.raises(ValueError):
        encode_with_indexes(np.zeros(3, int), np.full(3, 64), GAUSSIAN_TABLE)
    with pytest.raises(ValueError):
        encode_with_indexes(np.zeros(3), np.zeros(3, int), GAUSSIAN_TABLE)
    with pytest.raises(ValueError, match="too far"):
        encode_with_indexes(np.array([2**62]), np.zeros(1, int), GAUSSIAN_TABLE)
