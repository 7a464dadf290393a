"""Information measures against scipy.stats.entropy and skimage's shannon_entropy."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import entropy as scipy_entropy
from skimage.measure import shannon_entropy

from course_lib.entropy import (
    cross_entropy,
    empirical_entropy,
    empirical_pmf,
    entropy,
    kl_divergence,
    self_information,
)


def _random_pmfs(seed, shape, zeros=True):
    rng = np.random.default_rng(seed)
    p = rng.random(shape) ** 3
    if zeros:
        p[rng.random(shape) < 0.2] = 0
    p[..., 0] += 0.01  # keep every distribution non-empty
    return p


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 5), size=st.integers(1, 40),
       base=st.sampled_from([2.0, np.e, 10.0]))
def test_entropy_kl_cross_entropy_match_scipy(seed, rows, size, base):
    p = _random_pmfs(seed, (rows, size))
    q = _random_pmfs(seed + 1, (rows, size), zeros=False)
    np.testing.assert_allclose(entropy(p, base=base), scipy_entropy(p, base=base, axis=-1),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kl_divergence(p, q, base=base),
                               scipy_entropy(p, q, base=base, axis=-1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        cross_entropy(p, q, base=base),
        scipy_entropy(p, base=base, axis=-1) + scipy_entropy(p, q, base=base, axis=-1),
        rtol=1e-10, atol=1e-12,
    )
    # Gibbs: coding with the wrong distribution never helps
    assert np.all(cross_entropy(p, q, base=base) >= entropy(p, base=base) - 1e-12)


def test_entropy_along_other_axis_and_known_values():
    p = _random_pmfs(3, (7, 4))
    np.testing.assert_allclose(entropy(p, axis=0), scipy_entropy(p, base=2, axis=0), rtol=1e-12)
    assert entropy([0.5, 0.5]) == pytest.approx(1.0)
    assert entropy(np.ones(256)) == pytest.approx(8.0)
    assert entropy([1.0, 0.0, 0.0]) == 0.0
    assert kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf
    assert cross_entropy([0.5, 0.5], [1.0, 0.0]) == np.inf


def test_self_information():
    np.testing.assert_allclose(self_information([1.0, 0.5, 0.125]), [0.0, 1.0, 3.0])
    np.testing.assert_allclose(self_information(0.25, base=np.e), np.log(4))
    assert self_information(0.0) == np.inf
    # entropy is the expected self-information
    p = _random_pmfs(5, 30, zeros=False)
    p /= p.sum()
    assert np.sum(p * self_information(p)) == pytest.approx(entropy(p), rel=1e-12)


@pytest.mark.parametrize("bad", [[-0.1, 1.1], [0.0, 0.0], [np.nan, 1.0]])
def test_bad_distributions_raise(bad):
    with pytest.raises(ValueError):
        entropy(bad)
    with pytest.raises(ValueError):
        kl_divergence(bad, [0.5, 0.5])


def test_empirical_entropy_of_image_matches_scipy_and_skimage():
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 20, (64, 48, 3)), 0, 255).astype(np.uint8)
    expected = scipy_entropy(np.bincount(image.ravel()), base=2)
    assert empirical_entropy(image) == pytest.approx(expected, rel=1e-12)
    assert empirical_entropy(image) == pytest.approx(shannon_entropy(image, base=2), rel=1e-12)
    values, probs = empirical_pmf(image)
    assert probs.sum() == pytest.approx(1.0) and np.all(np.diff(values) > 0)


def test_empirical_entropy_of_quantised_latents_per_channel():
    torch.manual_seed(0)
    widths = torch.tensor([0.3, 1.0, 3.0, 10.0])[:, None, None]
    latent = torch.round(torch.randn(4, 16, 16) * widths)
    per_channel = empirical_entropy(latent, channel_axis=0)
    for c in range(4):
        _, counts = np.unique(latent[c].numpy(), return_counts=True)
        assert per_channel[c] == pytest.approx(scipy_entropy(counts, base=2), rel=1e-12)
    assert np.all(np.diff(per_channel) > 0)  # wider channels cost more bits
    with pytest.raises(ValueError, match="quantise"):
        empirical_entropy(latent + 0.5)
