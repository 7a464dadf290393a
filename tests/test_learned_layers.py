"""GDN's bounds, the sub-pixel transposed convolution, quantisation and the entropy models of
the learned codec. GDN's outputs, and the entropy models' likelihoods, are compared with
CompressAI's in test_compressai_referee.py."""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from course_lib.entropy_models import EntropyBottleneck, GaussianConditional, quantize
from course_lib.layers import GDN, SubpixelConvTranspose2d, lower_bound


@pytest.mark.parametrize("kernel, stride, padding, output_padding",
                         [(5, 2, 2, 1), (3, 2, 1, 1), (4, 2, 1, 0), (7, 3, 3, 2), (3, 1, 1, 0)])
def test_subpixel_transposed_convolution_matches_pytorch(kernel, stride, padding,
                                                         output_padding):
    """Same parameters, same outputs and gradients as nn.ConvTranspose2d, in training and at
    inference (where oneDNN computes it)."""
    torch.manual_seed(kernel + 10 * stride)
    layer = SubpixelConvTranspose2d(5, 4, kernel, stride, padding, output_padding)
    reference = torch.nn.ConvTranspose2d(5, 4, kernel, stride, padding, output_padding)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 7, 9)
    output = layer(x)
    torch.testing.assert_close(output, reference(x), rtol=1e-5, atol=1e-5)
    output.square().sum().backward()
    reference(x).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference(x), rtol=1e-5, atol=1e-5)


def test_subpixel_kernels_kept_at_inference_follow_every_change_of_the_weights():
    """At inference the phase kernels are computed once and kept; loading other weights, an
    in-place edit, an optimiser step and a change of dtype must each be seen."""
    torch.manual_seed(3)
    layer = SubpixelConvTranspose2d(4, 3, 5, 2, 2, 1)
    reference = torch.nn.ConvTranspose2d(4, 3, 5, 2, 2, 1)
    x = torch.randn(1, 4, 6, 5)

    def agrees():
        reference.load_state_dict(layer.state_dict())
        with torch.no_grad():
            return torch.allclose(layer(x.to(layer.weight.dtype)),
                                  reference.to(layer.weight.dtype)(x.to(layer.weight.dtype)),
                                  rtol=1e-5, atol=1e-5)

    assert agrees()
    layer.load_state_dict(torch.nn.ConvTranspose2d(4, 3, 5, 2, 2, 1).state_dict())
    assert agrees()
    with torch.no_grad():
        layer.weight.mul_(-2.0)
        layer.bias.add_(1.0)
    assert agrees()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x).square().sum().backward()
    optimizer.step()
    assert agrees()
    layer.double()
    assert agrees()


def test_subpixel_transposed_convolution_refuses_other_output_sizes():
    with pytest.raises(ValueError, match="stride x input"):
        SubpixelConvTranspose2d(3, 3, 5, 2, 2, 0)  # would make 2 H - 1 rows


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_inference_path_gives_the_training_forms_numbers(inverse):
    """At inference on one image GDN computes gamma @ (channels, positions), with fewer passes
    over memory; its numbers must be exactly those of the other form at any thread count, or
    the codec's files would depend on which path ran."""
    torch.manual_seed(0)
    gdn = GDN(32, inverse=inverse)
    with torch.no_grad():  # a trained-looking gamma and beta, not the identity
        gdn.gamma.add_(torch.rand_like(gdn.gamma) * 0.3)
        gdn.beta.add_(torch.rand_like(gdn.beta))
    base = torch.randn(1, 32, 23, 41) * 3
    previous = torch.get_num_threads()
    try:
        for x in (base, base[..., 1:20, 3:40]):  # a tile's slice is not contiguous
            expected = gdn(x.clone().requires_grad_(True)).detach()  # the training form
            norm = torch.sqrt(gdn.beta_reparam(gdn.beta)[:, None, None] + torch.einsum(
                "ij,njhw->nihw", gdn.gamma_reparam(gdn.gamma), x * x)).detach()
            torch.testing.assert_close(expected, x * norm if inverse else x / norm)
            for threads in (1, 2, 4):
                torch.set_num_threads(threads)
                with torch.no_grad():
                    assert torch.equal(gdn(x), expected)
    finally:
        torch.set_num_threads(previous)


def test_gdn_parameters_stay_non_negative_under_training():
    torch.manual_seed(0)
    gdn = GDN(3)
    optimizer = torch.optim.SGD(gdn.parameters(), lr=1.0)
    for _ in range(20):  # push beta and gamma hard towards negative values
        optimizer.zero_grad()
        (gdn.beta_reparam(gdn.beta).sum() + gdn.gamma_reparam(gdn.gamma).sum()).backward()
        optimizer.step()
    assert gdn.beta_reparam(gdn.beta).min() >= 1e-6 - 1e-12
    assert gdn.gamma_reparam(gdn.gamma).min() >= 0
    assert torch.isfinite(gdn(torch.randn(1, 3, 4, 4))).all()


def test_lower_bound_lets_upward_gradients_through():
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    y = lower_bound(x, 0.0)
    assert y.tolist() == [0.0, 2.0]
    (y * torch.tensor([-1.0, 1.0])).sum().backward()  # wants x[0] to grow: passes
    assert x.grad.tolist() == [-1.0, 1.0]
    x.grad = None
    lower_bound(x, 0.0).sum().backward()  # would push x[0] further down: blocked
    assert x.grad.tolist() == [0.0, 1.0]


def test_quantisation_modes():
    torch.manual_seed(0)
    x = torch.randn(1000, requires_grad=True) * 3
    noisy = quantize(x, "noise")
    assert (noisy - x).abs().max() <= 0.5 and (noisy - x).std() > 0.25
    offset = torch.tensor(0.3)
    rounded = quantize(x, "round", offset)
    assert torch.allclose(rounded - offset, torch.round(rounded - offset), atol=1e-6)
    ste = quantize(x, "ste", offset)
    torch.testing.assert_close(ste, rounded)
    (grad,) = torch.autograd.grad(ste.sum(), x)
    assert torch.equal(grad, torch.ones_like(grad))  # straight through
    with pytest.raises(ValueError, match="noise"):
        quantize(x, "floor")


def test_gaussian_likelihood_matches_scipy():
    torch.manual_seed(0)
    y = torch.randn(2, 3, 4, 5, dtype=torch.float64) * 4
    scales = torch.rand(2, 3, 4, 5, dtype=torch.float64) * 5 + 0.2
    means = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    model = GaussianConditional()
    ours = model.likelihood(torch.round(y), scales, means).numpy()
    value, mu, s = torch.round(y).numpy(), means.numpy(), scales.numpy()
    reference = norm.cdf(value + 0.5, mu, s) - norm.cdf(value - 0.5, mu, s)
    np.testing.assert_allclose(ours, np.maximum(reference, 1e-9), rtol=1e-6, atol=1e-12)


def test_gaussian_conditional_round_trip_and_rate():
    torch.manual_seed(1)
    model = GaussianConditional()
    scales = torch.exp(torch.randn(1, 8, 16, 16) * 1.5)
    means = torch.randn(1, 8, 16, 16) * 3
    y = means + scales * torch.randn(1, 8, 16, 16)
    y[0, 0, 0, 0] = 10_000.0  # far outside any table: escape-coded, still exact
    data = model.compress(y, scales, means)
    y_hat = model.decompress(data, scales, means)
    torch.testing.assert_close(y_hat, torch.round(y - means) + means)
    estimated = -torch.log2(model.likelihood(y_hat, scales, means)).sum().item()
    assert 8 * len(data) < estimated * 1.05 + 64  # the table quantisation costs little


def _trained_bottleneck(channels=4, steps=150):
    torch.manual_seed(0)
    model = EntropyBottleneck(channels)
    data = torch.randn(32, channels, 8, 8) * torch.tensor([0.5, 2.0, 5.0, 1.0]).view(1, -1, 1, 1)
    main = [p for n, p in model.named_parameters() if n != "quantiles"]
    optimizer = torch.optim.Adam(main, lr=1e-2)
    aux = torch.optim.Adam([model.quantiles], lr=1e-1)
    for _ in range(steps):
        _, likelihoods = model(data)
        loss = -torch.log2(likelihoods).mean() + model.loss()
        optimizer.zero_grad(), aux.zero_grad()
        loss.backward()
        optimizer.step(), aux.step()
    return model.eval(), data


def test_entropy_bottleneck_density_is_a_distribution_and_codes_exactly():
    model, data = _trained_bottleneck()
    grid = torch.arange(-60.0, 61.0).view(1, 1, -1).repeat(4, 1, 1)
    pmf = model.bin_masses(grid)
    np.testing.assert_allclose(pmf.sum(dim=-1).detach().numpy().ravel(), 1.0, atol=1e-3)
    y_hat, likelihoods = model(data)
    string = model.compress(data)
    decoded = model.decompress(string, data.shape)
    torch.testing.assert_close(decoded, y_hat)
    estimated_bits = -torch.log2(likelihoods).sum().item()
    assert abs(8 * len(string) - estimated_bits) < 0.02 * estimated_bits + 64
    with pytest.raises(ValueError, match="shape"):
        model.bin_masses(grid[0])


def test_tables_rebuild_when_parameters_change_and_survive_save_load():
    model, data = _trained_bottleneck(steps=50)
    assert model.update() is True and model.update() is False  # built once, then current
    with torch.no_grad():
        model.biases[0].add_(0.1)
    assert not model.tables_are_current()
    string = model.compress(data)  # rebuilds by itself
    assert model.tables_are_current()
    clone = EntropyBottleneck(4)
    clone.load_state_dict(model.state_dict())
    assert clone.tables_are_current()  # the loaded integer tables are kept as they are
    assert torch.equal(clone._cdfs, model._cdfs)
    torch.testing.assert_close(clone.decompress(string, data.shape), model(data)[0])
    assert clone.compress(data) == string  # and code to the same bytes
