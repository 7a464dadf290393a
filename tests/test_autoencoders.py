"""Autoencoders: shapes, the dense model as a strided convolution, quantised latents and their
files, the shipped weights and the latents notebook 04 reads."""

import hashlib
import io
import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from course_lib import autoencoders as ae
from course_lib import weights
from course_lib.codecs import latent_files
from course_lib.recipes import autoencoders as recipe
from course_lib.train import parameter_count
from course_lib.weights import WeightsError

FAST_SETTINGS = settings(max_examples=15, deadline=None)


@pytest.mark.parametrize("name", sorted(recipe.PRETRAINED))
def test_every_model_maps_any_image_size_back_to_itself(name):
    torch.manual_seed(0)
    model = recipe.PRETRAINED[name]()
    x = torch.rand(2, 3, 37, 53)
    y = model.encode(x)
    f = model.factor
    assert y.shape == (2, model.latent_channels, math.ceil(37 / f), math.ceil(53 / f))
    x_hat = model.decode(y, 37, 53)
    assert x_hat.shape == x.shape and 0 <= x_hat.min() and x_hat.max() <= 1
    assert model.values_per_pixel == model.latent_channels / f**2
    assert model(torch.rand(1, 3, 2 * f, 2 * f)).shape == (1, 3, 2 * f, 2 * f)


@FAST_SETTINGS
@given(patch=st.sampled_from([2, 4, 8]), rows=st.integers(1, 3), cols=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_dense_autoencoder_on_tiles_is_a_convolution_with_stride_equal_to_kernel(
        patch, rows, cols, seed):
    """Referee for the tiling: Linear on flattened p x p tiles == conv p x p, stride p; the
    decoder == transposed conv p x p, stride p."""
    torch.manual_seed(seed)
    model = ae.DenseAutoencoder(patch_size=patch, hidden=(16, 8, 4)).eval()
    x = torch.rand(2, 3, rows * patch, cols * patch)
    first, second, third = (layer for layer in model.encoder if isinstance(layer, torch.nn.Linear))
    h = F.relu(F.conv2d(x - 0.5, first.weight.view(16, 3, patch, patch), first.bias,
                        stride=patch))
    h = F.relu(F.conv2d(h, second.weight[:, :, None, None], second.bias))
    expected_y = F.conv2d(h, third.weight[:, :, None, None], third.bias)
    torch.testing.assert_close(model.g_a(x), expected_y, atol=1e-5, rtol=1e-5)

    y = torch.randn(2, 4, rows, cols)
    first, second, third = (layer for layer in model.decoder if isinstance(layer, torch.nn.Linear))
    h = F.relu(F.conv2d(y, first.weight[:, :, None, None], first.bias))
    h = F.relu(F.conv2d(h, second.weight[:, :, None, None], second.bias))
    kernel = third.weight.t().reshape(16, 3, patch, patch)
    tiled_bias = third.bias.view(3, patch, patch).repeat(1, rows, cols)
    expected_x = torch.sigmoid(F.conv_transpose2d(h, kernel, stride=patch) + tiled_bias)
    torch.testing.assert_close(model.g_s(y), expected_x, atol=1e-5, rtol=1e-5)


def test_dense_parameter_count_formula():
    model = ae.DenseAutoencoder(patch_size=16)
    widths = [3 * 16 * 16, 128, 64, 32]
    one_side = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    mirror = sum((b + 1) * a for a, b in zip(widths[:-1], widths[1:], strict=True))
    assert parameter_count(model) == one_side + mirror == 218_272


def test_dropout_is_off_when_reconstructing_and_the_mode_is_restored():
    torch.manual_seed(0)
    model = ae.DenseAutoencoder(patch_size=4, dropout=0.5).train()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        trained_path = model(x)  # dropout on: half the hidden units dropped at random
        expected = model.eval()(x).clamp(0, 1)  # dropout off: the deterministic network
    model.train()
    assert not torch.allclose(trained_path, expected, atol=1e-3)  # dropout does change it
    assert torch.equal(model.reconstruct(x), expected)
    assert model.training


@FAST_SETTINGS
@given(channels=st.integers(1, 6), rows=st.integers(1, 9), cols=st.integers(1, 9),
       bits=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_quantisation_error_is_at_most_half_a_step(channels, rows, cols, bits, seed):
    y = torch.randn(channels, rows, cols, generator=torch.Generator().manual_seed(seed)) * 5
    quantized = latent_files.quantize_latents(y, bits)
    levels = 2**bits - 1
    assert quantized.symbols.dtype == np.uint8 and quantized.symbols.max() <= levels
    step = torch.from_numpy((quantized.high - quantized.low) / levels)[:, None, None]
    error = (latent_files.dequantize_latents(quantized)[0] - y).abs()
    assert torch.all(error <= step / 2 + 1e-5 * (1 + y.abs()))
    if rows * cols > 1:  # the extremes of each channel land on the end levels
        assert np.all(quantized.symbols.reshape(channels, -1).min(axis=1) == 0)
        assert np.all(quantized.symbols.reshape(channels, -1).max(axis=1) == levels)


def test_constant_channel_is_stored_exactly():
    y = torch.full((2, 3, 4), 1.25)
    quantized = latent_files.quantize_latents(y, bits=4)
    assert np.all(quantized.symbols == 0)
    assert torch.equal(latent_files.dequantize_latents(quantized)[0], y)


@FAST_SETTINGS
@given(channels=st.integers(1, 10), rows=st.integers(1, 12), cols=st.integers(1, 12),
       bits=st.integers(1, 8), method=st.sampled_from(latent_files.STORAGE_METHODS),
       seed=st.integers(0, 2**16))
def test_latent_files_round_trip(channels, rows, cols, bits, method, seed):
    y = torch.randn(channels, rows, cols, generator=torch.Generator().manual_seed(seed))
    quantized = latent_files.quantize_latents(y, bits, image_size=(8 * rows - 3, 8 * cols))
    data = latent_files.pack_latents(quantized, method)
    back = latent_files.unpack_latents(data)
    assert np.array_equal(back.symbols, quantized.symbols)
    assert np.array_equal(back.low, quantized.low) and np.array_equal(back.high, quantized.high)
    assert (back.bits, back.image_size) == (bits, (8 * rows - 3, 8 * cols))
    overhead = 12 + 8 * channels
    if method == "raw":
        assert len(data) == overhead + math.ceil(channels * rows * cols * bits / 8)
    elif method == "zlib":  # referee: the payload is exactly what zlib makes of the bytes
        assert data[overhead:] == zlib.compress(quantized.symbols.tobytes(), 9)
    else:  # referee: Pillow reads the payload as a PNG holding every symbol once
        image = np.array(Image.open(io.BytesIO(data[overhead:])))
        assert image.sum() == quantized.symbols.astype(np.int64).sum()


def test_damaged_latent_files_raise_clear_errors():
    data = latent_files.pack_latents(latent_files.quantize_latents(torch.randn(2, 4, 4)), "zlib")
    with pytest.raises(ValueError, match="too few"):
        latent_files.unpack_latents(data[:5])
    with pytest.raises(ValueError, match="damaged"):
        latent_files.unpack_latents(data[:-6])
    with pytest.raises(ValueError, match="bad header"):
        latent_files.unpack_latents(b"\x09" + data[1:])
    with pytest.raises(ValueError, match="method"):
        latent_files.pack_latents(latent_files.quantize_latents(torch.randn(2, 4, 4)), "gzip")
    with pytest.raises(ValueError, match="bits"):
        latent_files.quantize_latents(torch.randn(2, 4, 4), bits=9)


def test_compress_decompress_matches_quantised_decode():
    torch.manual_seed(0)
    model = ae.StridedAutoencoder(latent_channels=4, downsamplings=2, channels=8)
    x = torch.rand(1, 3, 30, 21)
    data = latent_files.compress_image(model, x, bits=8, method="png")
    x_hat = latent_files.decompress_image(model, data)
    assert x_hat.shape == x.shape
    quantized = latent_files.image_latents(model, x, 8)
    expected = model.decode(latent_files.dequantize_latents(quantized), 30, 21)
    torch.testing.assert_close(x_hat, expected, atol=0, rtol=0)
    # 8-bit latents change the picture very little (an untrained model: small outputs).
    assert (x_hat - model.reconstruct(x)).abs().max() < 0.02
    with pytest.raises(ValueError, match="latent channels"):
        latent_files.decompress_image(
            ae.StridedAutoencoder(latent_channels=5, downsamplings=2, channels=8), data)


def test_float64_latents_round_like_float32_ones():
    torch.manual_seed(1)
    model = ae.StridedAutoencoder(latent_channels=8, downsamplings=3, channels=16)
    x = torch.rand(1, 3, 64, 96)
    symbols = latent_files.image_latents(model, x).symbols
    # referee: a float64 copy of the network built from the state dict, on the float64 image
    # (64 x 96 needs no padding)
    float64_model = ae.StridedAutoencoder(latent_channels=8, downsamplings=3, channels=16)
    float64_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        float64_latent = float64_model.double().eval().g_a(x.double())[0]
    assert np.array_equal(symbols, latent_files.quantize_latents(float64_latent).symbols)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the model is untouched
    float32 = latent_files.quantize_latents(model.encode(x)[0]).symbols
    assert np.abs(symbols.astype(int) - float32).max() <= 1
    assert np.mean(symbols != float32) < 1e-3


def test_reconstruction_loss_logs_psnr():
    model = ae.StridedAutoencoder(latent_channels=2, downsamplings=1, channels=4)
    x = torch.rand(2, 3, 8, 8)
    losses = recipe.reconstruction_loss(model, x)
    torch.testing.assert_close(losses["loss"], F.mse_loss(model(x), x))
    torch.testing.assert_close(losses["psnr"], -10 * torch.log10(losses["loss"]))


def test_train_autoencoder_runs_the_course_trainer(tmp_path):
    torch.manual_seed(0)
    model = ae.StridedAutoencoder(latent_channels=4, downsamplings=2, channels=8)
    result = recipe.train_autoencoder(model, 6, num_images=3, patch_size=32, batch_size=2,
                                  log_every=2, progress=False, log_csv=tmp_path / "log.csv")
    assert [row["step"] for row in result.history] == [2, 4, 6]
    assert result.history[-1]["lr"] == pytest.approx(1e-4)  # the last fifth runs at lr / 10
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 4
    with pytest.raises(ValueError, match="multiple of the model's factor"):
        recipe.train_autoencoder(model, 1, patch_size=30)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ae.StridedAutoencoder().encode(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=">= 1"):
        ae.ConvPoolAutoencoder(latent_channels=0)
    with pytest.raises(ValueError, match="one image"):
        latent_files.image_latents(ae.StridedAutoencoder(), torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown model"):
        recipe.load_pretrained("vae")


def test_latent_explorer_edits_and_draws(shown_titles):
    from course_lib.widgets import autoencoders as explorer

    torch.manual_seed(0)
    model = ae.StridedAutoencoder(latent_channels=3, downsamplings=2, channels=8)
    image = (np.random.default_rng(0).random((24, 20, 3)) * 255).astype(np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x_hat, y, psnr, bpp = explorer.edit_latents(model, x, channel=1)
    assert torch.equal(x_hat, model.reconstruct(x)) and bpp is None
    x_hat, y, psnr, bpp = explorer.edit_latents(model, x, channel=1, gain=0.0, bits=4)
    assert torch.all(y[0, 1] == 0) and not torch.all(y[0, 0] == 0)
    # referee: the edited latent stored by hand, and skimage's PSNR of its decoded image
    mask = torch.tensor([1.0, 0.0, 1.0])[:, None, None]
    quantized = latent_files.quantize_latents(model.encode(x)[0] * mask, 4)
    data = latent_files.pack_latents(quantized, "zlib")
    assert bpp == 8 * len(data) / (24 * 20)
    decoded = model.decode(latent_files.dequantize_latents(quantized), 24, 20)
    expected_psnr = peak_signal_noise_ratio(
        image, (decoded[0].permute(1, 2, 0) * 255).round().byte().numpy(), data_range=255)
    assert psnr == pytest.approx(expected_psnr, abs=1e-4)
    with pytest.raises(ValueError, match="channel"):
        explorer.edit_latents(model, x, channel=3)

    panel = explorer.latent_explorer(model, image, channel=2, gain=-1.0, bits=None)
    unrounded = peak_signal_noise_ratio(
        image, (model.reconstruct(x)[0].permute(1, 2, 0) * 255).round().byte().numpy(),
        data_range=255)
    assert [title for title in shown_titles[-1] if title] == [
        "original", f"reconstruction: {unrounded:.2f} dB\nfloat latents (no file)",
        "latent channel 2 (6 x 5), sent x -1"]
    channel, gain, bits = panel.children[0].children
    channel.value, gain.value, bits.value = 1, 0.0, 4  # each redraws; the last shows all three
    assert [title for title in shown_titles[-1] if title] == [
        "original", f"reconstruction: {expected_psnr:.2f} dB\n4-bit latents, zlib: "
        f"{8 * len(data) / (24 * 20):.3f} bpp", "latent channel 1 (6 x 5), sent x 0"]


# Shipped weights -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(recipe.PRETRAINED))
def test_shipped_weights_load_into_the_current_architecture(name):
    model = recipe.load_pretrained(name)
    assert not model.training
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_weights_come_through_the_one_loader_and_damage_is_refused(ship_weights):
    good = (weights.CHECKOUT / "autoencoders" / "conv_pool.pt").read_bytes()
    shipped = ship_weights("autoencoders/conv_pool.pt", good)
    assert not recipe.load_pretrained("conv_pool").training
    assert recipe.weights_dir() == shipped.parent
    shipped.write_bytes(good[:-20] + bytes([good[-20] ^ 1]) + good[-19:])
    with pytest.raises(WeightsError, match="damaged"):
        recipe.load_pretrained("conv_pool")
    with pytest.raises(WeightsError, match="not a shipped file"):
        recipe.load_pretrained("dense")  # not in this test's manifest


def test_pretrained_latents_for_notebook_04_are_reproducible():
    quantized = recipe.pretrained_latents("strided_f8_c8", kodak_index=23, bits=8)
    assert quantized.symbols.shape == (8, 64, 96) and quantized.image_size == (512, 768)
    assert quantized.symbols.dtype == np.uint8
    # Pinned: the same symbols on every machine, and as long as the shipped weights stay.
    digest = hashlib.sha256(quantized.symbols.tobytes()).hexdigest()
    assert digest == PINNED_LATENT_SHA256


PINNED_LATENT_SHA256 = "8ef0f8a608f56b1309c9caaf0432e905ed5cf75e285b095c773535491e823752"
