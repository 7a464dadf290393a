"""The course's learned-codec pieces against CompressAI, the library they imitate.

CompressAI (a dev dependency, imported plainly: without it these tests fail, they do not skip)
is the referee for GDN / IGDN, the factorized entropy bottleneck, the Gaussian conditional and
the three models' architectures. Each comparison gives both implementations the same
parameters and random inputs.

Tolerances, measured with CompressAI 1.2.8 and torch 2.14.1 on a CPU (each test states its
numbers; asserted with a margin of 5x or more):

* float64: the two compute the same formulas in a different order (GDN: a 1 x 1 convolution
  against a matrix product; bin masses: sigmoid(upper) - sigmoid(lower) against the course's
  tail-precise difference), so they agree to a few roundings: GDN 4e-16 relative (asserted
  1e-12), bin masses 3e-16 absolute / 6e-11 relative in the far tails where CompressAI's
  subtraction cancels (asserted 1e-14 / 1e-9), Gaussian likelihoods 2e-16 / 1.5e-14 (asserted
  1e-14 / 1e-11);
* float32, the codec's own precision: GDN 2.2e-7 relative (asserted 2e-6), entropy-bottleneck
  likelihoods 1.5e-7 absolute / 2.3e-5 relative (asserted 2e-6 / 2e-4), Gaussian 1.2e-7 /
  4.2e-6 (asserted 2e-6 / 5e-5); the quantised latents are equal exactly.
"""

import copy
import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():  # CompressAI 1.2.8 calls torch.jit.script on import
    warnings.simplefilter("ignore", FutureWarning)
    from compressai import models as reference_models
    from compressai.entropy_models import EntropyBottleneck as ReferenceBottleneck
    from compressai.entropy_models import GaussianConditional as ReferenceGaussian
    from compressai.layers import GDN as ReferenceGDN
    from compressai.models.base import get_scale_table

from course_lib import models
from course_lib.entropy.cdf import gaussian_cdf_table, log_scale_table
from course_lib.entropy_models import LIKELIHOOD_BOUND, EntropyBottleneck, GaussianConditional
from course_lib.layers import GDN

# -- GDN ---------------------------------------------------------------------------------------


def _gdn_pair(channels, inverse, dtype, seed):
    """The course's GDN and CompressAI's, both set to the same random beta > 0 and a random
    non-symmetric gamma >= 0 (a transposed gamma would show), each stored through its own
    reparametrisation."""
    generator = torch.Generator().manual_seed(seed)
    beta = torch.rand(channels, generator=generator, dtype=torch.float64) + 0.2
    gamma = torch.rand(channels, channels, generator=generator, dtype=torch.float64) * 0.5
    ours = GDN(channels, inverse=inverse).to(dtype)
    reference = ReferenceGDN(channels, inverse=inverse).to(dtype)
    with torch.no_grad():
        for layer in (ours, reference):
            layer.beta.copy_(layer.beta_reparam.init(beta.to(dtype)))
            layer.gamma.copy_(layer.gamma_reparam.init(gamma.to(dtype)))
    assert not torch.allclose(gamma, gamma.t())
    return ours, reference


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_stores_its_parameters_as_compressai_does(inverse):
    ours, reference = _gdn_pair(6, inverse, torch.float64, seed=1)
    # the same reparametrisation: equal stored values for equal beta and gamma, equal reads
    assert torch.equal(ours.beta, reference.beta) and torch.equal(ours.gamma, reference.gamma)
    torch.testing.assert_close(ours.beta_reparam(ours.beta),
                               reference.beta_reparam(reference.beta), rtol=0, atol=0)
    torch.testing.assert_close(ours.gamma_reparam(ours.gamma),
                               reference.gamma_reparam(reference.gamma), rtol=0, atol=0)
    # fresh layers start from the same values (beta = 1, gamma = 0.1 I)
    fresh, fresh_reference = GDN(5, inverse=inverse), ReferenceGDN(5, inverse=inverse)
    assert torch.equal(fresh.beta, fresh_reference.beta)
    assert torch.equal(fresh.gamma, fresh_reference.gamma)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype, rtol, atol, grad_tol", [(torch.float64, 1e-12, 1e-14, 1e-10),
                                                         (torch.float32, 2e-6, 2e-6, 1e-4)])
def test_gdn_outputs_and_gradients_match_compressai(inverse, dtype, rtol, atol, grad_tol):
    """Outputs (measured 4e-16 / 2.2e-7 relative in float64 / float32) and the gradients of a
    random projection of them with respect to x, beta and gamma (measured 7e-14 / 7e-5
    absolute, on gradients up to about 100)."""
    ours, reference = _gdn_pair(6, inverse, dtype, seed=2 + inverse)
    below = torch.zeros(6, 6, dtype=torch.bool)
    below[torch.arange(6), (torch.arange(6) + 1) % 6] = True
    with torch.no_grad():  # stored values below their bound (0): the gradient rule matters
        for layer in (ours, reference):
            layer.gamma[below] = -0.05
    x = torch.randn(3, 6, 9, 11, generator=torch.Generator().manual_seed(4), dtype=dtype) * 2
    x_ours, x_reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = ours(x_ours), reference(x_reference)
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    for ours_grad, reference_grad in [(x_ours.grad, x_reference.grad),
                                      (ours.beta.grad, reference.beta.grad),
                                      (ours.gamma.grad, reference.gamma.grad)]:
        torch.testing.assert_close(ours_grad, reference_grad, rtol=grad_tol, atol=grad_tol)
    # below the bound both pass a gradient that pushes the stored value back up, and only that
    passed = ours.gamma.grad[below] != 0
    assert torch.equal(passed, reference.gamma.grad[below] != 0)
    assert torch.equal(passed, ours.gamma.grad[below] < 0) and 0 < passed.sum() < 6


# -- the factorized entropy bottleneck ---------------------------------------------------------


def _bottleneck_pair(channels=5, seed=1):
    """Course and CompressAI bottlenecks with the same density (every matrix, bias and factor
    moved away from its initial value) and the same quantiles (not at their start either).
    Both name the parameters ``matrices``, ``biases``, ``factors`` (ParameterLists) and
    ``quantiles`` ``(C, 1, 3)``: (lower tail, median, upper tail)."""
    generator = torch.Generator().manual_seed(seed)
    ours, reference = EntropyBottleneck(channels), ReferenceBottleneck(channels)
    ours_parameters = dict(ours.named_parameters())
    reference_parameters = dict(reference.named_parameters())
    assert ours_parameters.keys() == reference_parameters.keys()
    with torch.no_grad():
        for name, parameter in ours_parameters.items():
            if name == "quantiles":
                start = torch.tensor([-8.0, 0.3, 9.0]).repeat(channels, 1, 1)
                parameter.copy_(start + torch.randn(parameter.shape, generator=generator))
            else:
                parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
            assert parameter.shape == reference_parameters[name].shape, name
            reference_parameters[name].copy_(parameter)
    return ours, reference


def test_bottleneck_starts_from_compressais_initial_density():
    torch.manual_seed(0)
    ours = EntropyBottleneck(4)
    torch.manual_seed(0)
    reference = ReferenceBottleneck(4)
    for (name, parameter), (reference_name, expected) in zip(
            ours.named_parameters(), reference.named_parameters(), strict=True):
        assert name == reference_name
        torch.testing.assert_close(parameter, expected, rtol=0, atol=0, msg=name)
    assert torch.equal(ours.target, reference.target)


def test_bottleneck_bin_masses_match_compressai_in_float64():
    ours, reference = _bottleneck_pair()
    ours.double()
    reference.double()
    values = torch.linspace(-40, 40, 801, dtype=torch.float64).repeat(5, 1, 1)  # tails too
    with torch.no_grad():
        masses = ours.bin_masses(values)
        expected, _, _ = reference._likelihood(values)
    assert expected.min() < 1e-5  # the grid reaches the tails
    torch.testing.assert_close(masses, expected, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (1, 5, 1, 1)])
def test_bottleneck_forward_matches_compressai_in_evaluation(shape):
    ours, reference = _bottleneck_pair()
    ours.eval()
    reference.eval()
    y = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 4
    y[0, 0, 0, 0] = 300.0  # far in a tail: both bound the likelihood below at 1e-9
    with torch.no_grad():
        y_hat, likelihoods = ours(y)
        expected_hat, expected = reference(y)
    assert torch.equal(y_hat, expected_hat)  # rounded around the same medians
    torch.testing.assert_close(likelihoods, expected, rtol=2e-4, atol=2e-6)
    assert likelihoods[0, 0, 0, 0] == expected[0, 0, 0, 0] == pytest.approx(LIKELIHOOD_BOUND)


def test_bottleneck_quantiles_medians_and_aux_loss_follow_compressai():
    ours, reference = _bottleneck_pair()
    assert torch.equal(ours.medians, reference._get_medians().flatten())
    with torch.no_grad():
        assert ours.loss().item() == pytest.approx(reference.loss().item(), rel=1e-6)
    # Where the auxiliary loss wants the quantiles: CompressAI finds the same tails and
    # medians by bisection (``_update_quantiles``, to 1e-3); there the course's loss is ~0
    # (0.0029 measured over 15 quantiles, against 200 at the start).
    searched = copy.deepcopy(reference)
    searched._update_quantiles()
    with torch.no_grad():
        ours.quantiles.copy_(searched.quantiles)
        logits = ours._logits_cumulative(ours.quantiles)
        np.testing.assert_allclose((logits - ours.target).numpy().ravel(), 0, atol=2e-3)
        assert ours.loss().item() < 0.01
        assert torch.equal(ours.medians, searched._get_medians().flatten())


def test_bottleneck_tables_cover_compressais_range():
    ours, reference = _bottleneck_pair()
    ours.update()
    reference.update(force=True)
    # the same range of values around each median: offset -ceil(median - lower tail) and
    # ceil(upper - median) + 1 + ceil(median - lower) values, plus an escape symbol; CompressAI
    # counts CDF entries (one more than symbols)
    assert ours._cdf_offsets.tolist() == reference._offset.tolist()
    assert (ours._cdf_lengths + 1).tolist() == reference._cdf_length.tolist()


# -- the Gaussian conditional ------------------------------------------------------------------


def _gaussian_inputs(dtype):
    generator = torch.Generator().manual_seed(0)
    shape = (2, 6, 8, 9)
    y = torch.randn(shape, generator=generator, dtype=dtype) * 6
    scales = torch.exp(torch.randn(shape, generator=generator, dtype=dtype) * 1.5)
    means = torch.randn(shape, generator=generator, dtype=dtype) * 3
    assert (scales < 0.11).any() and (scales > 20).any()  # both bounds are exercised
    return y, scales, means


@pytest.mark.parametrize("with_means", [False, True])
def test_gaussian_likelihoods_match_compressai_in_float64(with_means):
    y, scales, means = _gaussian_inputs(torch.float64)
    means = means if with_means else None
    y_hat = torch.round(y - (0 if means is None else means)) + (0 if means is None else means)
    ours = GaussianConditional().likelihood(y_hat, scales, means)
    expected = ReferenceGaussian(None)._likelihood(y_hat, scales, means).clamp_min(1e-9)
    # CompressAI keeps its scale bound 0.11 in a float32 buffer (0.1099999994), so scales it
    # raises to the bound differ by 5e-9 relative from the course's 0.11 (1.2e-7 measured on
    # the likelihood); compare those at float32 precision.
    above = scales >= 0.11
    torch.testing.assert_close(ours[above], expected[above], rtol=1e-11, atol=1e-14)
    torch.testing.assert_close(ours[~above], expected[~above], rtol=1e-6, atol=1e-14)


@pytest.mark.parametrize("with_means", [False, True])
def test_gaussian_forward_matches_compressai_in_evaluation(with_means):
    y, scales, means = _gaussian_inputs(torch.float32)
    means = means if with_means else None
    ours, reference = GaussianConditional().eval(), ReferenceGaussian(None).eval()
    y_hat, likelihoods = ours(y, scales, means)
    expected_hat, expected = reference(y, scales, means)
    assert torch.equal(y_hat, expected_hat)
    torch.testing.assert_close(likelihoods, expected, rtol=5e-5, atol=2e-6)
    # gradients of the rate with respect to the scales (what trains h_s)
    scales_ours = scales.clone().requires_grad_()
    scales_reference = scales.clone().requires_grad_()
    (-ours.likelihood(y_hat, scales_ours, means).log2().sum()).backward()
    bounded = reference.likelihood_lower_bound(
        reference._likelihood(y_hat, scales_reference, means))
    (-bounded.log2().sum()).backward()
    # measured: 5e-4 absolute on gradients up to 283 (float32 erfc in the tails)
    torch.testing.assert_close(scales_ours.grad, scales_reference.grad, rtol=1e-2, atol=1e-3)


def test_gaussian_scale_table_and_table_ranges_are_compressais():
    # 64 scales from 0.11 to 256, log-spaced; CompressAI computes them in float32
    np.testing.assert_allclose(log_scale_table(), get_scale_table().double().numpy(),
                               rtol=1e-6, atol=0)
    reference = ReferenceGaussian(get_scale_table().tolist())
    reference.update()
    table = gaussian_cdf_table(log_scale_table(), 16, tail_mass=1e-9)
    # the same value range per scale: -ceil(scale * Phi^-1(1 - tail / 2)) .. +that, and an
    # escape; CompressAI counts CDF entries (one more than symbols)
    np.testing.assert_array_equal(table.offsets, reference._offset.numpy())
    np.testing.assert_array_equal(table.lengths + 1, reference._cdf_length.numpy())


# -- the models' architectures -----------------------------------------------------------------

MODELS = ["FactorizedPrior", "ScaleHyperprior", "MeanScaleHyperprior"]
COUNTS = {  # N=128, M=192 (the defaults of both libraries), as CompressAI 1.2.8 counts them
    "FactorizedPrior": 2_998_147, "ScaleHyperprior": 5_075_843,
    "MeanScaleHyperprior": 7_028_003,
}


def _parameter_count(module):
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("n, m", [(128, 192), (16, 24)])
def test_models_have_compressais_parameters(name, n, m):
    """Same layers, so the same parameter count, names and shapes (a CompressAI state dict's
    parameters load into the course's model). By design the course computes some layers
    differently (transposed convolutions as convolution + pixel shuffle, GDN as a matrix
    product) but with CompressAI's parameters; with ``num_rates > 1`` it adds gain vectors,
    which CompressAI's models do not have (not compared here)."""
    ours = getattr(models, name)(n, m)
    reference = getattr(reference_models, name)(N=n, M=m)
    shapes = {key: tuple(value.shape) for key, value in ours.named_parameters()}
    expected = {key: tuple(value.shape) for key, value in reference.named_parameters()}
    assert shapes == expected, f"{name}: parameters differ from CompressAI's: " \
        f"{sorted(set(shapes.items()) ^ set(expected.items()))}"
    assert _parameter_count(ours) == _parameter_count(reference)
    if (n, m) == (128, 192):
        assert _parameter_count(ours) == COUNTS[name]
    for part in ("g_a", "g_s", "h_a", "h_s", "entropy_bottleneck"):
        if hasattr(reference, part):
            assert _parameter_count(getattr(ours, part)) == _parameter_count(
                getattr(reference, part)), f"{name}.{part}"


@pytest.mark.parametrize("name", MODELS)
def test_models_with_compressais_weights_give_its_outputs(name):
    """CompressAI's model's parameters copied in, the same image: the same reconstruction and
    likelihoods in evaluation mode (rounded latents). Measured: x_hat 2.1e-7 absolute,
    likelihoods 1.2e-7 absolute / 4.7e-6 relative (asserted 2e-6 and 1e-6 / 1e-4)."""
    torch.manual_seed(0)
    reference = getattr(reference_models, name)(N=16, M=24).eval()
    ours = getattr(models, name)(16, 24).eval()
    with torch.no_grad():
        parameters = dict(reference.named_parameters())
        for key, parameter in ours.named_parameters():
            parameter.copy_(parameters[key] + 0.01 * torch.randn_like(parameter))
            parameters[key].copy_(parameter)
        for model in (ours, reference):
            # untrained: y would round to 0 and h_s give scales below the bound; spread y over
            # several integers and raise the predicted scales to about 2, so that the
            # likelihoods compared are neither ~1 nor the 1e-9 floor
            model.g_a[-1].weight.mul_(30)
            if hasattr(model, "h_s"):
                convolutions = [m for m in model.h_s.modules() if isinstance(m, torch.nn.Conv2d)]
                convolutions[-1].bias.add_(2.0)
        x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
        out, expected = ours(x), reference(x)
    assert out["likelihoods"].keys() == expected["likelihoods"].keys()
    torch.testing.assert_close(out["x_hat"], expected["x_hat"], rtol=0, atol=2e-6)
    for key, likelihoods in expected["likelihoods"].items():
        assert 1e-6 < likelihoods.min() and likelihoods.median() < 0.5, key
        torch.testing.assert_close(out["likelihoods"][key], likelihoods, rtol=1e-4, atol=1e-6)
