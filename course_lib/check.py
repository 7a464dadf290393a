"""Exercise checkers: each prints pass/fail with the largest difference and returns a bool.

Notebooks call them right after an exercise cell, e.g.::

    check.close("conv2d_loops", my_conv(x, w), F.conv2d(x, w), atol=1e-5)
"""

from __future__ import annotations

import numpy as np
import torch


def _as_array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def close(name: str, got, expected, atol: float = 1e-6, rtol: float = 0.0) -> bool:
    """Check that ``got`` equals ``expected`` element-wise within ``atol + rtol*|expected|``."""
    try:
        got_array, expected_array = _as_array(got), _as_array(expected)
    except (TypeError, ValueError) as err:
        print(f"✗ {name}: could not read the answer as numbers ({err})")
        return False
    if got_array.shape != expected_array.shape:
        print(f"✗ {name}: shape {got_array.shape}, expected {expected_array.shape}")
        return False
    both_inf = np.isinf(got_array) & (got_array == expected_array)  # inf == inf is a match
    with np.errstate(invalid="ignore"):
        diff = np.where(both_inf, 0.0, np.abs(got_array - expected_array))
    max_diff = float(np.nanmax(diff)) if diff.size else 0.0
    if np.isnan(diff).any():
        max_diff = float("nan")
    ok = bool(np.all(diff <= atol + rtol * np.abs(np.where(both_inf, 0, expected_array))))
    mark = "✓ passed" if ok else "✗ failed"
    print(f"{mark} {name}: max |difference| = {max_diff:.3g} (tolerance {atol:g})")
    return ok


def true(name: str, condition: bool, hint: str = "") -> bool:
    """Check a yes/no property; on failure print the hint."""
    ok = bool(condition)
    print(f"✓ passed {name}" if ok else f"✗ failed {name}" + (f": {hint}" if hint else ""))
    return ok


def run(name: str, function, *args, **kwargs):
    """Call an exercise function; a stub that is not written yet prints a reminder.

    Returns the function's result, or ``None`` while it raises ``NotImplementedError``.
    """
    try:
        return function(*args, **kwargs)
    except NotImplementedError:
        print(f"… {name}: not implemented yet — fill in the exercise cell, then run this again")
        return None
