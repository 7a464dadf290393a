"""The readable rANS coder: exact round trips, overhead against -sum log2 p, the adaptive
model's learning cost, sizes against constriction on the same models, clean errors; its stream
of values with a table each against the fast coder's."""

import constriction
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import gammaln

from course_lib.entropy import (
    AdaptiveModel,
    CdfTable,
    DecodeError,
    StaticModel,
    empirical_entropy,
    rans,
    rans_decode,
    rans_encode,
)
from course_lib.entropy.fast import constriction_model
from course_lib.entropy.fast import encode_with_indexes as fast_encode


def _ideal_bits(symbols, cdf):
    freqs = np.diff(cdf)
    return float(-np.log2(freqs[symbols] / cdf[-1]).sum())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(2, 64), count=st.integers(0, 600),
       precision=st.integers(7, 24))
def test_static_round_trip(seed, size, count, precision):
    rng = np.random.default_rng(seed)
    pmf = rng.dirichlet(np.full(size, 0.5))
    model = StaticModel.from_pmf(pmf, precision)
    # symbols drawn from another distribution too: improbable symbols must round-trip as well
    symbols = rng.choice(size, count, p=pmf if seed % 2 else rng.dirichlet(np.ones(size)))
    data = rans_encode(symbols, model)
    np.testing.assert_array_equal(rans_decode(data, count, model), symbols)
    assert len(data) * 8 <= _ideal_bits(symbols, model.cdf()) + 64 + 32


def test_overhead_on_1e5_symbols_is_tiny():
    """10**5 symbols with the readable coder itself (about 0.4 s): within 0.1 % + 8 bytes of
    -sum log2 p under the quantised model."""
    rng = np.random.default_rng(0)
    pmf = rng.dirichlet(np.full(40, 0.3))
    model = StaticModel.from_pmf(pmf)
    symbols = rng.choice(40, 100_000, p=pmf)
    data = rans_encode(symbols, model)
    ideal_bytes = _ideal_bits(symbols, model.cdf()) / 8
    assert ideal_bytes <= len(data) <= ideal_bytes * 1.001 + 8
    np.testing.assert_array_equal(rans_decode(data, symbols.size, model), symbols)


def test_adaptive_model_round_trip_and_learning_cost():
    rng = np.random.default_rng(1)
    size, count = 12, 6000
    symbols = rng.choice(size, count, p=rng.dirichlet(np.ones(size)))
    model = AdaptiveModel(size)
    data = rans_encode(symbols, model)
    assert model.counts.sum() == size  # the caller's model is untouched
    np.testing.assert_array_equal(rans_decode(data, count, model), symbols)
    # Ideal adaptive cost with exact counts (Laplace's rule): log2 of
    # (n + K - 1)! / ((K - 1)! prod n_i!), at most n H_emp + (K - 1) log2(n + 1).
    counts = np.bincount(symbols, minlength=size)
    laplace_bits = (gammaln(count + size) - gammaln(size) - gammaln(counts + 1).sum()) / np.log(2)
    bound = count * empirical_entropy(symbols) + (size - 1) * np.log2(count + 1)
    assert laplace_bits <= bound
    assert laplace_bits / 8 <= len(data) <= laplace_bits / 8 * 1.002 + 8
    # against a static model fitted to these very symbols (which a decoder would have to be
    # sent), adapting costs only the learning term
    oracle = len(rans_encode(symbols, StaticModel.from_pmf(counts)))
    assert oracle < len(data) <= oracle + (size - 1) * np.log2(count + 1) / 8 + 16


def test_sizes_agree_with_constriction():
    rng = np.random.default_rng(2)
    for size in [2, 17, 256]:
        pmf = rng.dirichlet(np.full(size, 0.5))
        symbols = rng.choice(size, 20_000, p=pmf)
        model = StaticModel.from_pmf(pmf)
        ours = len(rans_encode(symbols, model))
        for reference_model in [constriction_model(model.cdf(), 16),  # our exact table
                                constriction.stream.model.Categorical(pmf, perfect=False)]:
            stack = constriction.stream.stack.AnsCoder()
            stack.encode_reverse(symbols.astype(np.int32), reference_model)
            queue = constriction.stream.queue.RangeEncoder()
            queue.encode(symbols.astype(np.int32), reference_model)
            for theirs in [stack.num_words() * 4, queue.num_words() * 4]:
                assert abs(ours - theirs) <= 0.01 * theirs, (size, ours, theirs)


def test_adaptive_sizes_agree_with_constriction():
    """constriction has no adaptive model: hand it our model's pmf before every symbol."""
    rng = np.random.default_rng(3)
    size = 8
    symbols = rng.choice(size, 3000, p=rng.dirichlet(np.ones(size)))
    model, rows = AdaptiveModel(size), []
    for symbol in symbols:
        rows.append(np.diff(model.cdf()))
        model.update(symbol)
    coder = constriction.stream.stack.AnsCoder()
    family = constriction.stream.model.Categorical(perfect=False)
    coder.encode_reverse(symbols.astype(np.int32), family, np.array(rows, dtype=np.float32))
    ours, theirs = len(rans_encode(symbols, AdaptiveModel(size))), coder.num_words() * 4
    assert abs(ours - theirs) <= 0.01 * theirs


def test_bad_data_raises_and_never_hangs():
    rng = np.random.default_rng(4)
    pmf = rng.dirichlet(np.ones(30))
    model = StaticModel.from_pmf(pmf)
    symbols = rng.choice(30, 1500, p=pmf)
    data = rans_encode(symbols, model)
    for cut in rng.integers(0, len(data), 30):
        with pytest.raises(DecodeError):
            rans_decode(data[:cut], symbols.size, model)
    with pytest.raises(DecodeError):
        rans_decode(data + b"\0\0\0\1", symbols.size, model)
    with pytest.raises(DecodeError):
        rans_decode(data, symbols.size - 1, model)
    caught = 0
    for _ in range(150):
        corrupted = bytearray(data)
        corrupted[rng.integers(len(data))] ^= 1 << rng.integers(8)
        try:
            rans_decode(bytes(corrupted), symbols.size, model)
        except DecodeError:
            caught += 1
    # the final state carries the message's CRC-32: random damage passes 1 time in ~2**32
    assert caught == 150
    for _ in range(50):
        garbage = rng.integers(0, 256, 4 * rng.integers(0, 300)).astype(np.uint8).tobytes()
        with pytest.raises(DecodeError):
            rans_decode(garbage, symbols.size, model)


@pytest.mark.parametrize("model", [AdaptiveModel(2), AdaptiveModel(64), AdaptiveModel(3, 12),
                                   StaticModel.from_pmf([0.25] * 4)])
def test_every_flipped_bit_of_a_short_message_is_caught(model):
    """Equal slot ranges let a flipped slot bit decode to another symbol that ends in the same
    state (1 flip in 64 for one symbol of two); the CRC-32 in the state catches each one."""
    for message in ([0], [1], [1, 0], [0, 1, 1]):
        data = rans_encode(message, model)
        for bit in range(8 * len(data)):
            damaged = bytearray(data)
            damaged[bit // 8] ^= 1 << bit % 8
            with pytest.raises(DecodeError):
                rans_decode(bytes(damaged), len(message), model)


def test_the_start_state_costs_at_most_one_bit():
    rng = np.random.default_rng(5)
    model = StaticModel.from_pmf(rng.dirichlet(np.ones(8)))
    for count in (1, 10, 100, 1000):
        symbols = rng.choice(8, count)
        data = rans_encode(symbols, model)
        final_state = int.from_bytes(data[:4], "little") << 32 | int.from_bytes(data[4:8],
                                                                                "little")
        stored_bits = 32 * (len(data) // 4 - 2) + np.log2(final_state)
        # the state starts at 2**32 + CRC, i.e. holds 32 to 33 bits before the first symbol
        extra = stored_bits - _ideal_bits(symbols, model.cdf())
        assert 32 - 1e-3 <= extra <= 33 + 1e-3


def test_bad_arguments_raise():
    model = StaticModel.from_pmf([0.5, 0.25, 0.25])
    with pytest.raises(ValueError):
        rans_encode([0, 3], model)
    with pytest.raises(ValueError):
        rans_encode([[0, 1]], model)
    with pytest.raises(ValueError):
        StaticModel([0, 5, 5, 16])
    with pytest.raises(ValueError):
        AdaptiveModel(1)


# A stream of values with a table each ------------------------------------------------------------


def _random_table(rng, num_tables):
    pmfs = [rng.dirichlet(np.full(rng.integers(2, 12), 0.7)) for _ in range(num_tables)]
    offsets = rng.integers(-6, 3, num_tables)
    return CdfTable.from_pmfs(pmfs, offsets, 16, rng.uniform(1e-6, 1e-2, num_tables))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 400))
def test_readable_coder_round_trips_and_matches_the_fast_path_size(seed, num_tables, size):
    rng = np.random.default_rng(seed)
    table = _random_table(rng, num_tables)
    indexes = rng.integers(0, num_tables, size)
    values = table.offsets[indexes] + rng.integers(-3, 14, size)  # some values escape
    values[rng.random(size) < 0.02] = 5000  # far escapes: several bypass groups
    data = rans.encode_with_indexes(values, indexes, table)
    np.testing.assert_array_equal(rans.decode_with_indexes(data, indexes, table), values)
    fast = fast_encode(values, indexes, table)
    # readable: 4-byte header + stream; fast: stream + 4-byte checksum. The streams hold the
    # same symbols in another order, so they may differ by a word of final state.
    assert abs(len(data) - len(fast)) <= 4
    ideal_bytes = table.information_bits(values, indexes) / 8
    assert ideal_bytes <= len(data) <= ideal_bytes + 4 + 8 + 4  # header, state, last word


def test_readable_decoder_refuses_bad_streams():
    rng = np.random.default_rng(1)
    table = _random_table(rng, 3)
    indexes = rng.integers(0, 3, 200)
    values = table.offsets[indexes] + rng.integers(0, 3, 200)
    data = rans.encode_with_indexes(values, indexes, table)
    with pytest.raises(DecodeError):
        rans.decode_with_indexes(data[:-4], indexes, table)
    with pytest.raises(DecodeError):
        rans.decode_with_indexes(data[:2], indexes, table)
    with pytest.raises(ValueError):
        rans.encode_with_indexes(values, indexes + 3, table)
