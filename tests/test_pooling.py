"""Hand-written pooling, upsampling and pixel shuffle against torch.nn.functional; bicubic
upsampling (which course_lib takes from F.interpolate) against cubic convolution written out in
NumPy and a hand-computed impulse response; the receptive field calculator against the
gradient of a real network.

Tolerances: pooling and nearest/pixel shuffle copy values, so they must be exact; interpolation
in float64 agrees to 1e-12 (rounding only).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from course_lib import conv, pooling

pair = st.tuples


@st.composite
def pool_case(draw):
    """Random image with distinct values (so the argmax is unique) and pooling geometry."""
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kernel = draw(pair(st.integers(1, 4), st.integers(1, 4)))
    stride = draw(st.none() | pair(st.integers(1, 3), st.integers(1, 3)))
    padding = draw(pair(st.integers(0, kernel[0] // 2), st.integers(0, kernel[1] // 2)))
    height = draw(st.integers(max(1, kernel[0] - 2 * padding[0]), 11))
    width = draw(st.integers(max(1, kernel[1] - 2 * padding[1]), 11))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randperm(batch * channels * height * width, generator=generator).float()
    return x.reshape(batch, channels, height, width), kernel, stride, padding


@settings(max_examples=50, deadline=None)
@given(pool_case())
def test_max_pool_values_and_indices_match_torch(case):
    x, kernel, stride, padding = case
    values, indices = pooling.max_pool2d(x, kernel, stride, padding, return_indices=True)
    expected_values, expected_indices = F.max_pool2d(x, kernel, stride, padding,
                                                     return_indices=True)
    assert torch.equal(values, expected_values)
    assert torch.equal(indices, expected_indices)
    assert torch.equal(pooling.max_pool2d(x, kernel, stride, padding), expected_values)
    unpooled = pooling.max_unpool2d(values, indices, x.shape[2:])
    expected = F.max_unpool2d(expected_values, expected_indices, kernel, stride, padding,
                              output_size=x.shape[2:])
    assert torch.equal(unpooled, expected)


@settings(max_examples=50, deadline=None)
@given(pool_case())
def test_avg_pool_matches_torch(case):
    x, kernel, stride, padding = case
    x = x.double()
    torch.testing.assert_close(pooling.avg_pool2d(x, kernel, stride, padding),
                               F.avg_pool2d(x, kernel, stride, padding), atol=1e-12, rtol=0)


def test_average_pooling_is_a_strided_convolution_with_a_box_kernel():
    x = torch.rand(1, 3, 12, 18, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    box = conv.box_kernel(3, torch.float64).reshape(1, 1, 3, 3)
    strided = conv.conv2d_unfold(x.reshape(3, 1, 12, 18), box, stride=3).reshape(1, 3, 4, 6)
    torch.testing.assert_close(pooling.avg_pool2d(x, 3), strided, atol=1e-12, rtol=0)


def test_pooling_rejects_more_padding_than_half_the_kernel():
    with pytest.raises(ValueError, match="half the kernel"):
        pooling.max_pool2d(torch.ones(1, 1, 8, 8), 2, padding=2)


# ----------------------------------------------------------------------------------------------
# Upsampling

sizes = st.integers(1, 13)


@settings(max_examples=60, deadline=None)
@given(sizes, sizes, sizes, sizes, st.integers(0, 2**16))
def test_resize_to_any_size_matches_interpolate(height, width, out_h, out_w, seed):
    """Enlarging and shrinking, non-square, odd sizes."""
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(seed),
                   dtype=torch.float64)
    size = (out_h, out_w)
    assert torch.equal(pooling.upsample_nearest(x, size=size),
                       F.interpolate(x, size=size, mode="nearest"))
    torch.testing.assert_close(
        pooling.upsample_bilinear(x, size=size),
        F.interpolate(x, size=size, mode="bilinear", align_corners=False), atol=1e-12, rtol=0)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 8])
def test_integer_factor_upsampling_matches_interpolate(factor):
    x = torch.rand(1, 2, 7, 10, generator=torch.Generator().manual_seed(factor),
                   dtype=torch.float64)
    bilinear = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert torch.equal(pooling.upsample_nearest(x, factor=factor),
                       F.interpolate(x, scale_factor=factor, mode="nearest"))
    torch.testing.assert_close(pooling.upsample_bilinear(x, factor=factor), bilinear,
                               atol=1e-12, rtol=0)
    # bilinear interpolation *is* a transposed convolution with the tent kernel
    torch.testing.assert_close(pooling.upsample_transposed(x, factor), bilinear,
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bilinear_kernel_spreads_each_pixel_with_unit_total(factor):
    """Away from the border every output pixel receives weights summing to exactly 1."""
    ones = torch.ones(1, 1, 6, 6, dtype=torch.float64)
    kernel = pooling.bilinear_kernel(factor, torch.float64)[None, None]
    out = conv.conv_transpose2d(ones, kernel, stride=factor)
    inner = out[..., 2 * factor : -2 * factor, 2 * factor : -2 * factor]
    torch.testing.assert_close(inner, torch.ones_like(inner), atol=1e-12, rtol=0)


def test_upsampling_needs_exactly_one_of_size_or_factor():
    with pytest.raises(ValueError, match="exactly one"):
        pooling.upsample_bilinear(torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="exactly one"):
        pooling.upsample_nearest(torch.ones(1, 1, 4, 4), size=(8, 8), factor=2)


@pytest.mark.parametrize(("factor", "shape"), [(2, (2, 12, 5, 7)), (3, (1, 18, 4, 3))])
def test_pixel_shuffle_and_unshuffle_match_torch(factor, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(factor))
    shuffled = pooling.pixel_shuffle(x, factor)
    assert torch.equal(shuffled, F.pixel_shuffle(x, factor))
    assert torch.equal(pooling.pixel_unshuffle(shuffled, factor),
                       F.pixel_unshuffle(shuffled, factor))
    assert torch.equal(pooling.pixel_unshuffle(shuffled, factor), x)
    with pytest.raises(ValueError, match="multiple"):
        pooling.pixel_shuffle(x[:, :-1], factor)


def test_icnr_subpixel_conv_starts_as_conv_then_nearest_upsampling():
    torch.manual_seed(0)
    factor, channels = 2, 3
    layer = nn.Conv2d(channels, channels * factor**2, 3, padding=1)
    pooling.icnr_(layer.weight, factor)
    nn.init.zeros_(layer.bias)
    x = torch.randn(1, channels, 6, 9)
    shared = layer.weight[:: factor**2]  # one kernel per output channel
    expected = pooling.upsample_nearest(F.conv2d(x, shared, padding=1), factor=factor)
    torch.testing.assert_close(pooling.pixel_shuffle(layer(x), factor), expected,
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_learned_resampler_starts_as_tent_filter_and_bilinear(factor):
    resampler = pooling.LearnedResampler(factor)
    # a linear ramp sampled at pixel centres: the tent filter keeps it, aligned with the
    # centre of each factor x factor block (rows `factor` to the border are clamped)
    ramp = torch.arange(8 * factor, dtype=torch.float32).expand(1, 2, 8 * factor, -1)
    low = resampler.down(ramp)
    centres = factor * torch.arange(8.0) + (factor - 1) / 2
    torch.testing.assert_close(low[0, 0, 2, 1:-1], centres[1:-1], atol=1e-4, rtol=0)
    expected = pooling.upsample_bilinear(low, factor=factor)
    torch.testing.assert_close(resampler.up(low), expected, atol=1e-5, rtol=0)
    loss = (resampler(ramp) - ramp).pow(2).mean()
    loss.backward()
    assert resampler.down_kernel.grad.abs().sum() > 0 and resampler.up_kernel.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# Receptive field

layer_strategy = st.tuples(
    st.sampled_from(["conv", "avg"]), st.integers(1, 5), st.integers(1, 2), st.integers(0, 2),
    st.integers(1, 2),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(layer_strategy, min_size=1, max_size=4))
def test_receptive_field_is_where_the_gradient_reaches(specs):
    """Back-propagate from one output pixel through all-positive layers (so nothing cancels)
    and compare the span of input pixels with a non-zero gradient with the calculator."""
    modules, geometry = [], []
    for kind, kernel, stride, padding, dilation in specs:
        if kind == "avg":
            padding, dilation = min(padding, kernel // 2), 1
            modules.append(nn.AvgPool2d((1, kernel), (1, stride), (0, padding)))
        else:
            layer = nn.Conv2d(1, 1, (1, kernel), (1, stride), (0, padding), (1, dilation),
                              bias=False)
            nn.init.ones_(layer.weight)
            modules.append(layer)
        geometry.append((kernel, stride, padding, dilation))
    field = pooling.receptive_field(geometry)[-1]
    width = 4 * field.size + 4 * field.jump
    x = torch.ones(1, 1, 1, width, requires_grad=True)
    out = nn.Sequential(*modules)(x)
    index = out.shape[-1] // 2
    out[0, 0, 0, index].backward()
    reached = x.grad[0, 0, 0].nonzero().flatten()
    centre = field.start + index * field.jump
    assert reached.min().item() == centre - (field.size - 1) / 2
    assert reached.max().item() == centre + (field.size - 1) / 2


def test_receptive_field_reads_modules_and_skips_pointwise_layers():
    encoder = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 5, stride=2, padding=2), nn.GELU()),
        nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, dilation=2),
    )
    rows = pooling.receptive_field(encoder)
    assert [(r.size, r.jump) for r in rows] == [(5, 2), (13, 4), (17, 8), (49, 8)]
    from_tuples = pooling.receptive_field([(5, 2, 2), (5, 2, 2), (2, 2), (3, 1, 0, 2)])
    assert [(r.size, r.jump, r.start) for r in rows] == [
        (r.size, r.jump, r.start) for r in from_tuples
    ]
    with pytest.raises(ValueError, match="upsamples"):
        pooling.receptive_field([nn.ConvTranspose2d(3, 3, 4, 2)])


def test_downsample_kinds_and_upsample_back_to_size():
    x = torch.rand(1, 3, 17, 22, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(pooling.downsample(x, "max", 3, 2), F.max_pool2d(x, 3, 2))
    torch.testing.assert_close(pooling.downsample(x, "average", 4), F.avg_pool2d(x, 4),
                               atol=1e-12, rtol=0)
    assert torch.equal(pooling.downsample(x, "subsample", 3), x[..., ::3, ::3])
    low = pooling.downsample(x, "average", 4)  # (4, 5): 16x20 of the 17x22 pixels
    for method in pooling.UPSAMPLING:
        restored = pooling.upsample(low, method, 4, size=x.shape[2:])
        assert restored.shape == x.shape
        # the row and column that pooling dropped are filled by repeating the last ones
        assert torch.equal(restored[..., 16, :], restored[..., 15, :])
    with pytest.raises(ValueError, match="unknown"):
        pooling.downsample(x, "median")
    with pytest.raises(ValueError, match="unknown"):
        pooling.upsample(low, "lanczos")


def _keys_cubic(distance, a=-0.75):
    """Keys' cubic-convolution kernel (1981) with PyTorch's and OpenCV's a = -0.75."""
    d = np.abs(distance)
    near = (a + 2) * d**3 - (a + 3) * d**2 + 1
    far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _bicubic_reference(x: np.ndarray, factor: int) -> np.ndarray:
    """Bicubic upsampling of (..., H, W) written from the definition, in NumPy: output pixel i
    samples input coordinate (i + 0.5) / factor - 0.5 (pixel centres aligned, not clamped),
    from the 4 pixels around it weighted by the kernel at their distances; pixels beyond the
    border repeat the edge pixel. One axis after the other (the kernel is separable)."""
    for axis in (-2, -1):
        size = x.shape[axis]
        source = (np.arange(size * factor) + 0.5) / factor - 0.5
        first = np.floor(source).astype(int) - 1
        taps = first[:, None] + np.arange(4)  # (out, 4)
        weights = _keys_cubic(source[:, None] - taps)
        gathered = np.take(x, np.clip(taps, 0, size - 1), axis=axis)  # axis -> (out, 4)
        x = np.moveaxis((np.moveaxis(gathered, (axis - 1, axis), (-2, -1)) * weights).sum(-1),
                        -1, axis)
    return x


def test_bicubic_impulse_response_is_the_hand_computed_kernel():
    """Factor 2: outputs sit 1/4 and 3/4 of a pixel from the inputs, so an impulse spreads as
    W(1.75), W(1.25), W(0.75), W(0.25) on each side; with a = -0.75 these are exact binary
    fractions, worked out by hand: W(0.25) = 1.25/64 - 2.25/16 + 1 = 225/256, W(0.75) =
    67/256, W(1.25) = -27/256, W(1.75) = -9/256 (summing to 1 with the mirror half)."""
    row = torch.zeros(1, 1, 1, 8, dtype=torch.float64)
    row[..., 3] = 1.0
    out = pooling.upsample(row, "bicubic", 2)
    expected = torch.zeros(1, 1, 2, 16, dtype=torch.float64)
    expected[..., 3:11] = torch.tensor([-9, -27, 67, 225, 225, 67, -27, -9]) / 256
    torch.testing.assert_close(out, expected, atol=1e-15, rtol=0)
    np.testing.assert_allclose(_keys_cubic(np.array([0.25, 0.75, 1.25, 1.75])),
                               np.array([225, 67, -27, -9]) / 256, atol=0, rtol=0)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bicubic_upsampling_matches_cubic_convolution_written_out(factor):
    """Random images, borders included (the clamped taps), against the NumPy definition;
    measured 3.6e-15 in float64 (align_corners=True would miss by 0.26-0.43)."""
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(factor),
                   dtype=torch.float64)
    expected = _bicubic_reference(x.numpy(), factor)
    np.testing.assert_allclose(pooling.upsample(x, "bicubic", factor).numpy(), expected,
                               atol=1e-12, rtol=0)
    # cropping to a size keeps the top-left of the same image
    np.testing.assert_allclose(pooling.upsample(x, "bicubic", factor, size=(9, 11)).numpy(),
                               expected[..., :9, :11], atol=1e-12, rtol=0)


def test_learned_resampler_with_a_larger_kernel_starts_identical():
    """The tent, zero-padded to a larger kernel, gives the same images, borders included."""
    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(3))
    small, large = pooling.LearnedResampler(4), pooling.LearnedResampler(4, kernel_size=16)
    with torch.no_grad():
        torch.testing.assert_close(large.down(x), small.down(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(large(x), small(x), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="even number"):
        pooling.LearnedResampler(4, kernel_size=11)
