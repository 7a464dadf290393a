"""Quantised CDF tables: the procedure equals constriction's quantiser bit for bit, tables obey
their invariants, escapes round-trip, and Gaussian tables follow the float model."""

import constriction
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from course_lib.entropy import (
    CdfTable,
    gaussian_cdf_table,
    kl_divergence,
    log_scale_table,
    quantize_pmf,
    scale_indexes,
)
from course_lib.entropy.cdf import bypass_groups, join_bypass_groups


def _constriction_cdf(pmf):
    """constriction's 24-bit CDF, read back by pushing each symbol onto an empty AnsCoder:
    from state 0 the pushed state is exactly the symbol's left cumulative frequency."""
    model = constriction.stream.model.Categorical(pmf, perfect=False)
    cdf = []
    for symbol in range(pmf.size):
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(np.array([symbol], dtype=np.int32), model)
        words = coder.get_compressed()
        cdf.append(int(words[0]) if words.size else 0)
    return np.array(cdf + [1 << 24])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(2, 200))
def test_quantize_pmf_equals_constriction_at_24_bits(seed, size):
    rng = np.random.default_rng(seed)
    pmf = rng.random(size) ** rng.uniform(1, 8)
    pmf[rng.random(size) < 0.1] = 0.0
    pmf[0] += 1e-6
    np.testing.assert_array_equal(quantize_pmf(pmf, 24), _constriction_cdf(pmf))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(2, 300), precision=st.integers(9, 24))
def test_quantized_pmf_invariants_and_loss(seed, size, precision):
    rng = np.random.default_rng(seed)
    pmf = rng.dirichlet(np.full(size, 0.3))
    cdf = quantize_pmf(pmf, precision)
    freqs = np.diff(cdf)
    assert cdf[0] == 0 and cdf[-1] == 2**precision and freqs.min() >= 1
    # Each symbol loses at most the size/2**precision mass handed out as minimum frequencies,
    # so coding with the table costs little more than the model's own entropy:
    assert np.all(np.abs(freqs / 2**precision - pmf) <= (size + 1) / 2**precision)
    assert kl_divergence(pmf, freqs) <= 3 * size / 2**precision + 1e-12


@pytest.mark.parametrize(
    "pmf, precision",
    [([1.0], 16), ([1.0, 2.0], 0), ([1.0, 2.0], 25), ([0.0, 0.0], 16), ([1.0, -1.0], 16),
     (np.ones(256), 8)],
)
def test_quantize_pmf_rejects_bad_input(pmf, precision):
    with pytest.raises(ValueError):
        quantize_pmf(pmf, precision)


def _random_table(rng, num_tables=5, precision=16):
    pmfs = [rng.random(rng.integers(1, 30)) ** 2 + 1e-9 for _ in range(num_tables)]
    offsets = rng.integers(-20, 5, num_tables)
    return CdfTable.from_pmfs(pmfs, offsets, precision, tail_masses=rng.random(num_tables) / 50)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_split_and_merge_values_round_trip_with_escapes(seed):
    rng = np.random.default_rng(seed)
    table = _random_table(rng)
    indexes = rng.integers(0, table.num_tables, (3, 50))
    values = rng.integers(-40, 40, (3, 50))
    values[0, :3] = [2**40, -(2**40), 0]
    symbols, overflow = table.split_values(values, indexes)
    escape = table.lengths[indexes.ravel()] - 1
    assert np.all((symbols >= 0) & (symbols <= escape))
    assert overflow.size == np.count_nonzero(symbols == escape) and np.all(overflow >= 0)
    counts, groups = bypass_groups(overflow)
    np.testing.assert_array_equal(join_bypass_groups(counts, groups), overflow)
    assert np.all(groups < 16) and np.all(counts <= 15)
    np.testing.assert_array_equal(table.merge_values(symbols, indexes, overflow), values)


def test_information_bits_counts_symbols_escapes_and_bypass():
    # one table over values 0, 1 (freqs 1/4, 1/2) plus escape (1/4)
    table = CdfTable(np.array([[0, 2**14, 3 * 2**14, 2**16]]), [3], [0], 16)
    bits = table.information_bits(np.array([0, 1, 1, 2, 17, -1]), np.zeros(6, dtype=int))
    # 2 + 1 + 1 bits; value 2: escape (2) + count 0 (4); 17: overflow 30 = 0x1e -> 2 + 4 + 8;
    # -1: overflow 1 -> 2 + 4 + 4
    assert bits == 2 + 1 + 1 + 6 + 14 + 10


def test_cdf_table_rejects_inconsistent_arrays():
    good = np.array([[0, 100, 2**16, 2**16]])
    CdfTable(good, [2], [0], 16)
    with pytest.raises(ValueError):
        CdfTable(good, [2], [0], 15)  # wrong precision
    with pytest.raises(ValueError):
        CdfTable(np.array([[0, 100, 50, 2**16]]), [3], [0], 16)  # not increasing
    with pytest.raises(ValueError):
        CdfTable(np.array([[0, 100, 2**16, 7]]), [2], [0], 16)  # bad padding
    with pytest.raises(ValueError):
        CdfTable(good, [2, 2], [0, 0], 16)
    with pytest.raises(ValueError):
        CdfTable(good, [2], [0], 16).split_values(np.zeros(3, int), np.ones(3, int))


def test_gaussian_table_follows_the_float_model():
    scales = log_scale_table(0.11, 64, 12)
    table = gaussian_cdf_table(scales, precision=16, tail_mass=1e-9)
    for j, scale in enumerate(scales):
        radius = -table.offsets[j]
        values = np.arange(-radius, radius + 1)
        expected = norm.cdf(values + 0.5, scale=scale) - norm.cdf(values - 0.5, scale=scale)
        freqs = np.diff(table.cdf(j)) / 2**16
        assert table.lengths[j] == 2 * radius + 2
        assert radius == np.ceil(scale * norm.isf(0.5e-9))
        assert np.max(np.abs(freqs[:-1] - expected)) <= (table.lengths[j] + 1) / 2**16
    # the table's cost of Gaussian samples is close to the model's entropy
    rng = np.random.default_rng(0)
    values = np.round(rng.normal(0, scales[6], 20000)).astype(int)
    indexes = np.full(values.shape, 6)
    model_bits = -np.log2(norm.cdf(values + 0.5, scale=scales[6])
                          - norm.cdf(values - 0.5, scale=scales[6])).sum()
    assert table.information_bits(values, indexes) == pytest.approx(model_bits, rel=0.01)


def test_scale_indexes_pick_the_nearest_table_in_log():
    table_scales = log_scale_table()
    scales = np.exp(np.random.default_rng(1).uniform(-4, 7, 1000))
    indexes = scale_indexes(scales, table_scales)
    brute_force = np.abs(np.log(scales)[:, None] - np.log(table_scales)[None, :]).argmin(axis=1)
    assert np.array_equal(indexes, brute_force)
    assert indexes.dtype == np.int64 and indexes.min() == 0
    assert np.all(indexes[scales > table_scales[-1]] == table_scales.size - 1)


def test_nearest_scale_costs_less_than_the_next_wider_one():
    """The rate of Gaussian values coded with the chosen tables, against their own scales."""
    table_scales = log_scale_table()
    rng = np.random.default_rng(2)
    scales = np.exp(rng.uniform(np.log(0.2), np.log(20), 20000))
    values = np.round(rng.normal(0, scales))

    def bits(coding_scales):
        return -np.log2(norm.cdf(np.abs(values) + 0.5, scale=coding_scales)
                        - norm.cdf(np.abs(values) - 0.5, scale=coding_scales)).sum()

    ideal = bits(scales)
    wider = np.minimum(np.searchsorted(table_scales, scales), table_scales.size - 1)
    nearest = bits(table_scales[scale_indexes(scales, table_scales)]) / ideal - 1
    assert nearest < 0.004 and nearest < (bits(table_scales[wider]) / ideal - 1) / 3
