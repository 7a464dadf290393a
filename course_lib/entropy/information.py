"""Information measures: self-information, entropy, cross-entropy, KL divergence.

Distributions are numpy arrays of probabilities along the last axis (or any axis via
``axis``); they are normalised to sum to one first, as ``scipy.stats.entropy`` does.
Everything is in bits unless ``base`` says otherwise.
"""

from __future__ import annotations

import numpy as np


def _log(x: np.ndarray, base: float) -> np.ndarray:
    return np.log(x) / np.log(base)


def _as_distribution(p, axis: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 0:
        raise ValueError("a distribution needs at least one axis of probabilities")
    if np.any(p < 0) or not np.all(np.isfinite(p)):
        raise ValueError("probabilities must be finite and non-negative")
    total = p.sum(axis=axis, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("each distribution needs a positive total probability")
    return p / total


def self_information(p, base: float = 2.0) -> np.ndarray:
    """Surprise ``-log(p)`` of an outcome of probability ``p`` (any shape, values in [0, 1]).

    ``p = 0`` gives ``inf``: an impossible outcome cannot be coded.
    """
    p = np.asarray(p, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    with np.errstate(divide="ignore"):
        return -_log(p, base)


def entropy(p, base: float = 2.0, axis: int = -1) -> np.ndarray:
    """Entropy ``H(p) = -sum p log p`` along ``axis`` (terms with ``p = 0`` contribute 0)."""
    p = _as_distribution(p, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * _log(p, base), 0.0)
    return terms.sum(axis=axis)


def cross_entropy(p, q, base: float = 2.0, axis: int = -1) -> np.ndarray:
    """Cross-entropy ``H(p, q) = -sum p log q``: the mean code length when data follow ``p``
    but the code was built for ``q``. ``inf`` if ``q = 0`` where ``p > 0``."""
    p, q = np.broadcast_arrays(_as_distribution(p, axis), _as_distribution(q, axis))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * _log(q, base), 0.0)
    return terms.sum(axis=axis)


def kl_divergence(p, q, base: float = 2.0, axis: int = -1) -> np.ndarray:
    """``D(p || q) = H(p, q) - H(p) >= 0``: the bits per symbol lost by coding ``p`` with ``q``.

    Equals ``scipy.stats.entropy(p, q, base=base)``.
    """
    p, q = np.broadcast_arrays(_as_distribution(p, axis), _as_distribution(q, axis))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (_log(p, base) - _log(q, base)), 0.0)
    return terms.sum(axis=axis)


def _integer_values(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, e.g. rounded latents
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.size == 0:
        raise ValueError("cannot measure the entropy of an empty array")
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise ValueError("values must be integers: quantise (round) them first")
        values = values.astype(np.int64)
    elif values.dtype.kind not in "iub":
        raise ValueError(f"values must be integers, got dtype {values.dtype}")
    return values


def empirical_pmf(values) -> tuple[np.ndarray, np.ndarray]:
    """Distinct integer values (sorted) and their relative frequencies in ``values``."""
    symbols, counts = np.unique(_integer_values(values), return_counts=True)
    return symbols, counts / counts.sum()


def empirical_entropy(values, channel_axis: int | None = None) -> float | np.ndarray:
    """Entropy in bits/value of the histogram of integer ``values`` (pixels, rounded latents).

    It is the rate an ideal coder reaches with one fixed distribution for all values and no
    context. With ``channel_axis`` (e.g. 0 for a (C, H, W) latent) each channel gets its own
    histogram and an array of shape (C,) is returned: the bound for a factorized prior.
    """
    values = _integer_values(values)
    if channel_axis is None:
        return float(entropy(empirical_pmf(values)[1]))
    channels = np.moveaxis(values, channel_axis, 0)
    return np.array([entropy(empirical_pmf(channel)[1]) for channel in channels])
