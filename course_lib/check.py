"""Exercise checkers: they judge *your* function and print pass or fail with the difference.

An exercise in a notebook has three cells:

1. your function, a stub that raises ``NotImplementedError`` until you write it;
2. the checker, a function decorated with :func:`exercise` that receives the functions to judge,
   then is called on yours::

       @check.exercise
       def check_bpp(my_bpp):
           check.close("my_bpp", my_bpp(1_000, 10, 10), 0.08, atol=1e-12)

       check_bpp(my_bpp)

3. the solution (tag ``solution``, source collapsed): the reference answer under a name of its
   own (``solution_bpp``), judged by the same checker with ``check_bpp.solution(solution_bpp)``.
   It never replaces your function, so running the notebook top to bottom judges your answer.

A stub prints "not implemented yet"; a wrong answer prints ✗ with the largest difference and
the tolerance. In strict mode (``COURSE_CHECK_STRICT=1``, which the course's CI sets) a failed
check raises :class:`CheckFailed`, and so does a solution that does not pass all of its checks,
so a wrong solution or checker fails the notebook run.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

STRICT_VARIABLE = "COURSE_CHECK_STRICT"


class CheckFailed(AssertionError):
    """A check failed in strict mode (or a solution did not pass its checker)."""


def strict_mode() -> bool:
    """True when ``$COURSE_CHECK_STRICT`` is set to anything but ``""`` or ``"0"``."""
    return os.environ.get(STRICT_VARIABLE, "") not in ("", "0")


# The results of the checks made inside the exercise that is being judged (None outside one).
_collected: list[bool] | None = None


def _report(ok: bool, message: str) -> bool:
    print(message)
    if _collected is not None:
        _collected.append(ok)
    elif not ok and strict_mode():
        raise CheckFailed(message)
    return ok


def _as_array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    elif isinstance(value, (list, tuple)):
        value = [v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for v in value]
    return np.asarray(value, dtype=np.float64)


def close(name: str, got, expected, atol: float = 1e-6, rtol: float = 0.0) -> bool:
    """Check ``|got - expected| <= atol + rtol * |expected|`` element-wise; print the verdict.

    The line gives the largest absolute difference, the largest relative one when ``rtol`` is
    used, and the tolerance. Infinities match when they are equal; NaN never matches.
    """
    try:
        got_array, expected_array = _as_array(got), _as_array(expected)
    except (TypeError, ValueError) as err:
        return _report(False, f"✗ failed {name}: could not read the answer as numbers ({err})")
    if got_array.shape != expected_array.shape:
        return _report(False, f"✗ failed {name}: shape {got_array.shape}, "
                              f"expected {expected_array.shape}")
    both_inf = np.isinf(got_array) & (got_array == expected_array)  # inf == inf is a match
    finite_expected = np.abs(np.where(both_inf, 0.0, expected_array))
    with np.errstate(invalid="ignore"):
        diff = np.where(both_inf, 0.0, np.abs(got_array - expected_array))
    has_nan = bool(np.isnan(diff).any())
    max_diff = float("nan") if has_nan else (float(diff.max()) if diff.size else 0.0)
    with np.errstate(invalid="ignore"):
        ok = not has_nan and bool(np.all(diff <= atol + rtol * finite_expected))
    summary = f"max |difference| = {max_diff:.3g}"
    tolerance = f"tolerance {atol:g}"
    if rtol:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            relative = np.where(diff == 0, 0.0, diff / finite_expected)
        max_relative = float("nan") if has_nan else (
            float(relative.max()) if relative.size else 0.0)
        summary += f", max relative = {max_relative:.3g}"
        tolerance += f" + {rtol:g}·|expected|"
    mark = "✓ passed" if ok else "✗ failed"
    return _report(ok, f"{mark} {name}: {summary} ({tolerance})")


def true(name: str, condition: bool, hint: str = "") -> bool:
    """Check a yes/no property; on failure print the hint."""
    ok = bool(condition)
    return _report(ok, f"✓ passed {name}" if ok
                   else f"✗ failed {name}" + (f": {hint}" if hint else ""))


class Exercise:
    """A checker made by :func:`exercise`: call it on your functions, or ``.solution(...)``."""

    def __init__(self, checker):
        self.checker = checker
        self.name = checker.__name__.removeprefix("check_")
        functools.update_wrapper(self, checker)

    def __call__(self, *functions, **kwargs) -> bool:
        """Judge your functions; True when every check passed."""
        return self._judge(functions, kwargs, solution=False)

    def solution(self, *functions, **kwargs) -> bool:
        """Judge the reference answer; in strict mode anything short of a pass raises."""
        return self._judge(functions, kwargs, solution=True)

    def _judge(self, functions, kwargs, solution: bool) -> bool:
        global _collected
        results: list[bool] = []
        outer, _collected = _collected, results
        try:
            self.checker(*functions, **kwargs)
        except NotImplementedError:
            print(f"… {self.name}: not implemented yet — write the exercise cell above, run it, "
                  "then run this cell again")
            if strict_mode() and (solution or False in results):
                what = "the solution of " if solution else ""
                raise CheckFailed(f"{what}{self.name} is not implemented "
                                  f"({results.count(False)} checks failed before)") from None
            return False
        except CheckFailed:
            raise
        except Exception as error:  # the answer crashed: a verdict, not a traceback
            results.append(False)
            print(f"✗ failed {self.name}: your code raised {type(error).__name__}: {error} "
                  "(call your function on its own to see where)")
        finally:
            _collected = outer
        if not results:
            results.append(False)
            print(f"✗ failed {self.name}: the checker made no check")
        passed = all(results)
        if not passed and strict_mode():
            failed = results.count(False)
            raise CheckFailed(f"{'solution of ' if solution else ''}{self.name}: "
                              f"{failed} of {len(results)} checks failed")
        return passed


def exercise(checker) -> Exercise:
    """Decorator: turn ``checker(*functions)`` into an :class:`Exercise`.

    Inside the checker, call your functions and judge them with :func:`close` and :func:`true`.
    A ``NotImplementedError`` from a stub prints "not implemented yet"; any other exception is
    reported as a failed check instead of stopping the notebook.
    """
    return Exercise(checker)
