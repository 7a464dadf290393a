"""The helpers behind notebook 04's demos: exact arithmetic-coding intervals and rANS state
sizes, checked against the information measures and the readable rANS coder."""

from fractions import Fraction

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.entropy import (
    HuffmanCode,
    StaticModel,
    quantize_pmf,
    rans_encode,
    self_information,
)
from course_lib.widgets import entropy as demos

matplotlib.use("Agg")
messages = st.tuples(st.lists(st.integers(0, 2), min_size=1, max_size=30),
                     st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3))


@settings(max_examples=40, deadline=None)
@given(messages)
def test_intervals_nest_and_shrink_by_the_probabilities(case):
    symbols, weights = case
    pmf = np.array(weights) / np.sum(weights)
    intervals = demos.arithmetic_intervals(symbols, pmf)
    assert intervals[0] == (0, 1) and len(intervals) == len(symbols) + 1
    for (low, width), (inner_low, inner_width) in zip(intervals[:-1], intervals[1:], strict=True):
        assert low <= inner_low and inner_low + inner_width <= low + width
    final_bits = -np.log2(float(intervals[-1][1]))
    np.testing.assert_allclose(final_bits, self_information(pmf[symbols]).sum(), rtol=1e-5)


def test_interval_of_a_worked_message():
    # P(H) = 3/4, H = symbol 0 owns the bottom part: H -> [0, 3/4); T -> [9/16, 12/16);
    # H -> [9/16, 9/16 + 3/16 * 3/4)
    intervals = demos.arithmetic_intervals([0, 1, 0], [0.75, 0.25])
    assert intervals[1:] == [(0, Fraction(3, 4)), (Fraction(9, 16), Fraction(3, 16)),
                             (Fraction(9, 16), Fraction(9, 64))]


@settings(max_examples=25, deadline=None)
@given(messages)
def test_rans_state_tracks_the_information(case):
    symbols, weights = case
    pmf = np.array(weights) / np.sum(weights)
    bits = demos.rans_state_bits(symbols, pmf)
    # the coder's model is the 16-bit quantised pmf; each push adds its information to within
    # the rounding of x // freq (relative error below freq / x <= 2**16 / 2**32)
    coder_pmf = np.diff(quantize_pmf(pmf, 16)) / 2**16
    information = np.concatenate([[0], np.cumsum(self_information(coder_pmf[symbols]))])
    np.testing.assert_allclose(bits, information, rtol=0, atol=1e-4 * len(symbols) + 1e-9)
    data = rans_encode(np.array(symbols), StaticModel.from_pmf(pmf))
    assert bits[-1] <= 8 * len(data) - 32  # the coder's bytes hold the state's bits


def test_code_tree_labels_each_leaf_with_its_codeword():
    code = HuffmanCode.from_frequencies([5, 2, 1, 1])
    ax = demos.draw_code_tree(code, "abcd", [0.5, 0.2, 0.15, 0.15])
    leaves = {text.get_text() for text in ax.texts if "\n" in text.get_text()}
    assert leaves == {f"{label}\n{word}\np={p:.2f}" for label, word, p in
                      zip("abcd", code.codewords, [0.5, 0.2, 0.15, 0.15], strict=True)}
    matplotlib.pyplot.close("all")


def _interval_title(shown):
    """The left panel's title of the figure the explorer showed last."""
    return shown[-1][0].split(" (blue")[0]


def test_coder_explorer_shows_the_interval_of_the_flips_chosen(shown_titles):
    """Moving the controls redraws the interval; the numbers are worked out by hand:
    P(H) = 0.7, HTTH: H -> [0, 0.7); T -> [0.49, 0.7), width 0.21 = 2.25 bits;
    T -> [0.637, 0.7), 0.063 = 3.99 bits; H -> [0.637, 0.6811), 0.0441 = 4.50 bits."""
    panel = demos.coder_explorer("HTTH", 0.7, 2)
    assert _interval_title(shown_titles) == (
        "after 2 flips: [0.4900, 0.7000), width 0.21 = 2.25 bits")
    message, heads, steps = panel.children[0].children
    steps.value = 3
    assert _interval_title(shown_titles) == (
        "after 3 flips: [0.6370, 0.7000), width 0.063 = 3.99 bits")
    steps.value = 4
    assert _interval_title(shown_titles) == (
        "after 4 flips: [0.6370, 0.6811), width 0.0441 = 4.50 bits")
    heads.value = 0.5  # a fair coin: every flip halves the interval, one bit each
    assert _interval_title(shown_titles) == (
        "after 4 flips: [0.3750, 0.4375), width 0.0625 = 4.00 bits")
    message.value = "TTTT"
    assert _interval_title(shown_titles) == (
        "after 4 flips: [0.9375, 1.0000), width 0.0625 = 4.00 bits")
    count = len(shown_titles)
    message.value = "HXT"  # refused with a message, nothing drawn
    assert len(shown_titles) == count
    with pytest.raises(ValueError, match="H and T"):
        demos.coder_explorer("HXT")
