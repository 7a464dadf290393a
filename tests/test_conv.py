"""Hand-written convolutions against torch.nn.functional, kernels against scipy.ndimage, the
block DCT against scipy.fft.

Tolerances: float64 inputs, so the hand-written sums may differ from PyTorch's only by rounding
in a different order: 1e-10 absolute on values of order 10. Copies (im2col) must be exact.
"""

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import conv

ATOL64 = 1e-10
pair = st.tuples


@st.composite
def conv_case(draw, transposed=False):
    """Random shapes and geometry, including non-square, odd and 1-pixel sizes."""
    batch = draw(st.integers(1, 2))
    in_channels, out_channels = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    height, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    kernel = draw(pair(st.integers(1, 4), st.integers(1, 4)))
    stride = draw(pair(st.integers(1, 3), st.integers(1, 3)))
    padding = draw(pair(st.integers(0, 2), st.integers(0, 2)))
    dilation = draw(pair(st.integers(1, 2), st.integers(1, 2)))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_channels, height, width, generator=generator, dtype=torch.float64)
    weight_shape = (in_channels, out_channels) if transposed else (out_channels, in_channels)
    weight = torch.randn(*weight_shape, *kernel, generator=generator, dtype=torch.float64)
    bias = torch.randn(out_channels, generator=generator, dtype=torch.float64)
    geometry = {"stride": stride, "padding": padding, "dilation": dilation}
    return x, weight, bias if draw(st.booleans()) else None, geometry


def fits(x, weight, geometry):
    return all(
        conv.conv_output_size(x.shape[2 + a], weight.shape[2 + a], geometry["stride"][a],
                              geometry["padding"][a], geometry["dilation"][a]) >= 1
        for a in range(2)
    )


@settings(max_examples=40, deadline=None)
@given(conv_case())
def test_conv2d_loops_and_unfold_match_torch(case):
    x, weight, bias, geometry = case
    if not fits(x, weight, geometry):
        with pytest.raises(ValueError, match="does not fit"):
            conv.conv2d_unfold(x, weight, bias, **geometry)
        return
    expected = F.conv2d(x, weight, bias, **geometry)
    torch.testing.assert_close(conv.conv2d_loops(x, weight, bias, **geometry), expected,
                               atol=ATOL64, rtol=0)
    torch.testing.assert_close(conv.conv2d_unfold(x, weight, bias, **geometry), expected,
                               atol=ATOL64, rtol=0)


@settings(max_examples=40, deadline=None)
@given(conv_case())
def test_im2col_is_unfold(case):
    x, weight, _, geometry = case
    if fits(x, weight, geometry):
        expected = F.unfold(x, weight.shape[2:], **geometry)
        assert torch.equal(conv.im2col(x, weight.shape[2:], **geometry), expected)


@settings(max_examples=40, deadline=None)
@given(conv_case(transposed=True), pair(st.integers(0, 2), st.integers(0, 2)))
def test_conv_transpose2d_matches_torch(case, output_padding):
    x, weight, bias, geometry = case
    limit = [max(geometry["stride"][a], geometry["dilation"][a]) for a in range(2)]
    output_padding = tuple(min(output_padding[a], limit[a] - 1) for a in range(2))
    full = [(x.shape[2 + a] - 1) * geometry["stride"][a]
            + geometry["dilation"][a] * (weight.shape[2 + a] - 1) + 1 for a in range(2)]
    if min(full[a] - 2 * geometry["padding"][a] + output_padding[a] for a in range(2)) < 1:
        with pytest.raises(ValueError, match="crops away"):
            conv.conv_transpose2d(x, weight, bias, output_padding=output_padding, **geometry)
        return
    expected = F.conv_transpose2d(x, weight, bias, output_padding=output_padding, **geometry)
    got = conv.conv_transpose2d(x, weight, bias, output_padding=output_padding, **geometry)
    torch.testing.assert_close(got, expected, atol=ATOL64, rtol=0)


def test_float32_photo_sized_input_matches_torch():
    """float32 as the notebooks use it: sums of 75 products of O(1) values, tolerance 1e-5."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 37, 53, generator=generator)
    weight = torch.randn(8, 3, 5, 5, generator=generator)
    bias = torch.randn(8, generator=generator)
    expected = F.conv2d(x, weight, bias, stride=2, padding=2)
    got = conv.conv2d_unfold(x, weight, bias, stride=2, padding=2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_conv_output_size_formula():
    assert conv.conv_output_size(32, 3) == 30
    assert conv.conv_output_size(32, 3, padding=1) == 32
    assert conv.conv_output_size(32, 5, stride=2, padding=2) == 16
    assert conv.conv_output_size(32, 3, dilation=2) == 28
    assert conv.conv_output_size(7, 2, stride=2) == 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: conv.conv2d_unfold(torch.ones(1, 2, 5, 5), torch.ones(1, 3, 3, 3)),
         "input channels"),
        (lambda: conv.conv2d_loops(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 3, 3)),
         "does not fit"),
        (lambda: conv.conv2d_unfold(torch.ones(1, 1, 5, 5), torch.ones(1, 1, 3, 3), stride=0),
         "stride"),
        (lambda: conv.conv2d_unfold(torch.ones(5, 5), torch.ones(1, 1, 3, 3)), r"\(N, C, H, W\)"),
        (lambda: conv.conv2d_unfold(torch.ones(1, 1, 5, 5), torch.ones(2, 1, 3, 3),
                                    torch.ones(3)), "bias"),
        (lambda: conv.conv_transpose2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 3), stride=2,
                                       output_padding=2), "output_padding"),
        (lambda: conv.block_dct(torch.ones(1, 1, 12, 16)), "multiple"),
        (lambda: conv.block_dct(torch.ones(1, 3, 16, 16)), "one channel"),
        (lambda: conv.block_idct(torch.ones(1, 10, 2, 2)), "64 channels"),
        (lambda: conv.separate(conv.LAPLACIAN), "not separable"),
        (lambda: conv.filter_image(torch.ones(1, 1, 5, 5), torch.ones(2, 2)), "odd"),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------------------------
# Classic kernels

@pytest.mark.parametrize("name", list(conv.classic_kernels()))
@pytest.mark.parametrize("shape", [(1, 1, 9, 14), (2, 3, 11, 7)])
def test_filter_image_matches_scipy_correlate(name, shape):
    """Reflect padding is scipy's 'mirror' mode; both correlate (no flip)."""
    kernel = conv.classic_kernels()[name].double()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = scipy.ndimage.correlate(x.numpy(), kernel.numpy()[None, None], mode="mirror")
    got = conv.filter_image(x, kernel)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12, rtol=0)


def test_kernel_sums_say_what_they_keep():
    kernels = conv.classic_kernels()
    for name in ("identity", "box blur", "gaussian blur", "sharpen"):
        assert kernels[name].sum().item() == pytest.approx(1.0)  # keep the mean brightness
    for name in ("sobel x", "sobel y", "laplacian"):
        assert kernels[name].sum().item() == 0.0  # flat regions -> 0: they find changes
    assert conv.gaussian_kernel(1.5).sum().item() == pytest.approx(1.0, abs=1e-6)
    assert conv.gaussian_kernel(1.5).shape == (11, 11)


@pytest.mark.parametrize(
    ("kernel", "column"),
    [
        (conv.SOBEL_X, torch.tensor([1.0, 2.0, 1.0])),
        (conv.gaussian_kernel(1.0), conv.gaussian_kernel_1d(1.0)),
        (conv.box_kernel(5), torch.full((5,), 0.2)),
    ],
)
def test_separable_kernels_split_into_column_and_row(kernel, column):
    got_column, got_row = conv.separate(kernel)
    torch.testing.assert_close(torch.outer(got_column, got_row), kernel, atol=1e-6, rtol=0)
    # the column is the expected one up to a scale that the row absorbs
    scale = got_column @ column / (column @ column)
    torch.testing.assert_close(got_column, scale * column, atol=1e-6, rtol=0)


def test_two_1d_passes_equal_the_2d_filter():
    x = torch.rand(2, 3, 20, 13, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    column = conv.gaussian_kernel_1d(1.2, dtype=torch.float64)
    row = conv.gaussian_kernel_1d(0.7, dtype=torch.float64)
    full = conv.filter_image(x, torch.outer(column, row))
    torch.testing.assert_close(conv.filter_separable(x, column, row), full, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------------
# DCT

def test_dct_matrix_is_orthonormal_and_is_scipys_dct():
    matrix = conv.dct_matrix(8)
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(8, dtype=torch.float64),
                               atol=1e-14, rtol=0)
    np.testing.assert_allclose(matrix.numpy(), scipy.fft.dct(np.eye(8), axis=0, norm="ortho"),
                               atol=1e-14)


@pytest.mark.parametrize("shape", [(2, 1, 16, 40), (1, 1, 8, 8), (3, 1, 24, 8)])
def test_block_dct_matches_scipy_dctn_on_every_block(shape):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    coefficients = conv.block_dct(x)
    n, _, height, width = shape
    assert coefficients.shape == (n, 64, height // 8, width // 8)
    blocks = x.numpy().reshape(n, height // 8, 8, width // 8, 8).transpose(0, 1, 3, 2, 4)
    expected = scipy.fft.dctn(blocks, axes=(-2, -1), norm="ortho")  # (N, h, w, 8, 8)
    got = coefficients.numpy().reshape(n, 8, 8, height // 8, width // 8).transpose(0, 3, 4, 1, 2)
    np.testing.assert_allclose(got, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_block_idct_reconstructs_perfectly(dtype, atol):
    """Pixel values 0..255 as in JPEG; float32 keeps ~7 digits of 255."""
    x = 255 * torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(5), dtype=dtype)
    coefficients = conv.block_dct(x)
    torch.testing.assert_close(conv.block_idct(coefficients), x, atol=atol, rtol=0)
    # orthonormal: the energy is the same in both domains (Parseval)
    assert coefficients.double().pow(2).sum().item() == pytest.approx(
        x.double().pow(2).sum().item(), rel=1e-6)


def test_block_idct_is_the_transposed_conv_of_the_kernels():
    coefficients = torch.randn(1, 64, 3, 5, generator=torch.Generator().manual_seed(6))
    expected = F.conv_transpose2d(coefficients, conv.dct_kernels(), stride=8)
    torch.testing.assert_close(conv.block_idct(coefficients), expected, atol=1e-5, rtol=0)


def test_energy_compaction_against_a_direct_count():
    coefficients = torch.randn(2, 64, 3, 4, generator=torch.Generator().manual_seed(7))
    got = conv.energy_compaction(coefficients)
    energy = coefficients.double().numpy() ** 2
    per_block = np.sort(energy.transpose(0, 2, 3, 1).reshape(-1, 64), axis=1)[:, ::-1]
    expected = np.cumsum(per_block.sum(axis=0)) / energy.sum()
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    # a flat image has all its energy in the DC coefficient
    flat = conv.energy_compaction(conv.block_dct(torch.full((1, 1, 16, 16), 0.3)))
    assert flat[0].item() == pytest.approx(1.0, abs=1e-6)
