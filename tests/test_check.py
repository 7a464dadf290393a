"""The exercise checkers: verdicts, what they print, and strict mode."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from course_lib import check


@pytest.fixture
def lenient(monkeypatch):
    monkeypatch.delenv(check.STRICT_VARIABLE, raising=False)


@pytest.fixture
def strict(monkeypatch):
    monkeypatch.setenv(check.STRICT_VARIABLE, "1")


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 6), elements=finite),
       arrays(np.float64, st.integers(1, 6), elements=finite),
       st.sampled_from([0.0, 1e-9, 1e-3, 0.5]), st.sampled_from([0.0, 1e-6, 1e-2]))
def test_close_agrees_with_numpy_allclose(got, expected, atol, rtol):
    if got.shape != expected.shape:
        got = np.resize(got, expected.shape)
    perturbed = expected + got * 1e-3  # near misses as well as clear ones
    with pytest.MonkeyPatch.context() as patch:  # lenient: a failed check returns False
        patch.delenv(check.STRICT_VARIABLE, raising=False)
        for candidate in (got, perturbed):
            assert check.close("x", candidate, expected, atol=atol, rtol=rtol) == np.allclose(
                candidate, expected, atol=atol, rtol=rtol)


def test_close_prints_the_difference_and_absolute_tolerance(lenient, capsys):
    assert check.close("sum", 3.5, 3.0, atol=1.0)
    assert capsys.readouterr().out == "✓ passed sum: max |difference| = 0.5 (tolerance 1)\n"
    assert not check.close("sum", 3.5, 3.0, atol=0.1)
    assert capsys.readouterr().out == "✗ failed sum: max |difference| = 0.5 (tolerance 0.1)\n"


def test_close_prints_the_relative_tolerance_it_passed_on(lenient, capsys):
    assert check.close("bits", 1000.0029, 1000.0, atol=1e-6, rtol=1e-5)
    out = capsys.readouterr().out
    assert out == ("✓ passed bits: max |difference| = 0.0029, max relative = 2.9e-06 "
                   "(tolerance 1e-06 + 1e-05·|expected|)\n")


def test_close_reads_tensors_lists_of_tensors_and_tuples(lenient):
    assert check.close("t", torch.tensor([1.0, 2.0], requires_grad=True), [1.0, 2.0], atol=0)
    assert check.close("l", [torch.tensor(1.0), torch.tensor(2.0)], (1, 2), atol=0)


def test_close_infinities_nan_shape_and_unreadable(lenient, capsys):
    assert check.close("inf", [np.inf, 1.0], [np.inf, 1.0], atol=0)
    assert not check.close("-inf", [-np.inf], [np.inf], atol=1e9)
    assert not check.close("nan", [np.nan], [np.nan], atol=1e9)
    assert "max |difference| = nan" in capsys.readouterr().out
    assert not check.close("shape", [1.0, 2.0], [[1.0, 2.0]])
    assert "shape (2,), expected (1, 2)" in capsys.readouterr().out
    assert not check.close("text", "abc", 1.0)
    assert "could not read the answer as numbers" in capsys.readouterr().out


def test_true_prints_the_hint_on_failure(lenient, capsys):
    assert check.true("sorted", True, "sort it")
    assert not check.true("sorted", False, "sort it")
    assert capsys.readouterr().out == "✓ passed sorted\n✗ failed sorted: sort it\n"


def test_strict_mode_turns_a_failed_check_into_an_error(strict, capsys):
    assert check.close("ok", 1.0, 1.0)
    with pytest.raises(check.CheckFailed, match="✗ failed wrong"):
        check.close("wrong", 2.0, 1.0)
    with pytest.raises(check.CheckFailed):
        check.true("no", False)
    assert check.strict_mode()


@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("1", True),
                                             ("yes", True)])
def test_strict_mode_variable(monkeypatch, value, expected):
    monkeypatch.setenv(check.STRICT_VARIABLE, value)
    assert check.strict_mode() is expected


@check.exercise
def check_double(double):
    check.close("double(2)", double(2), 4, atol=0)
    check.close("double(-3)", double(-3), -6, atol=0)


def stub(x):
    raise NotImplementedError("multiply by two")


def right(x):
    return 2 * x


def wrong(x):
    return x + 2  # right for 2, wrong for -3


def broken(x):
    return [1, 2][x]


def test_exercise_judges_the_function_it_is_given(lenient, capsys):
    assert check_double(right)
    assert capsys.readouterr().out.count("✓ passed") == 2
    assert not check_double(wrong)
    out = capsys.readouterr().out
    assert "✓ passed double(2)" in out and "✗ failed double(-3)" in out


def test_a_stub_prints_not_implemented_and_no_failure(strict, capsys):
    assert not check_double(stub)  # strict mode too: an unwritten exercise is not an error
    out = capsys.readouterr().out
    assert "double: not implemented yet" in out and "✗" not in out


def test_a_crash_in_the_answer_is_a_verdict_not_a_traceback(lenient, capsys):
    assert not check_double(broken)
    out = capsys.readouterr().out
    assert "✗ failed double: your code raised IndexError" in out


def test_strict_mode_fails_a_wrong_answer_and_any_solution_short_of_a_pass(strict, capsys):
    with pytest.raises(check.CheckFailed, match="double: 1 of 2 checks failed"):
        check_double(wrong)
    with pytest.raises(check.CheckFailed, match="solution of double"):
        check_double.solution(wrong)
    with pytest.raises(check.CheckFailed, match="not implemented"):
        check_double.solution(stub)
    with pytest.raises(check.CheckFailed):
        check_double.solution(broken)
    assert check_double.solution(right)


def test_lenient_mode_never_raises(lenient):
    assert not check_double.solution(wrong)
    assert not check_double.solution(stub)


def test_checks_inside_an_exercise_do_not_raise_one_by_one(strict, capsys):
    # both lines are printed before the exercise's verdict raises
    with pytest.raises(check.CheckFailed):
        check_double(lambda x: 0)
    assert capsys.readouterr().out.count("✗ failed") == 2


def test_a_checker_that_checks_nothing_fails(lenient, capsys):
    @check.exercise
    def check_nothing(function):
        function(1)

    assert not check_nothing(right)
    assert "made no check" in capsys.readouterr().out


def test_exercise_keeps_the_checker_name_and_doc():
    assert check_double.name == "double"
    assert check_double.__name__ == "check_double"
