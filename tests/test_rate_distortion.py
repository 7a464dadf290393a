"""Notebook 06's helpers: the readable coder on model tables against the fast path and the
ideal code length, densities against the entropy model, measurements against real files,
shipped-weight checks, the training recipe and the channel-cost widget."""

import hashlib

import matplotlib
import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid  # np.trapezoid needs numpy 2; course_lib: numpy 1.24+
from skimage.metrics import peak_signal_noise_ratio

from course_lib.codecs import learned
from course_lib.entropy import fast, rans
from course_lib.entropy.information import empirical_entropy
from course_lib.images import sample_image
from course_lib.layers import GDN
from course_lib.models import rate_bits, split_parameters
from course_lib.recipes import rate_distortion as rd
from course_lib.train import parameter_count
from course_lib.widgets import rate_distortion as widget

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def tiny_model():
    """A small factorized prior, trained a few steps on smooth random images."""
    torch.manual_seed(0)
    model = rd.factorized_prior(8, 12)
    main, quantiles = split_parameters(model)
    optimizer, aux = torch.optim.Adam(main, 3e-3), torch.optim.Adam(quantiles, 1e-2)
    loss_fn = rd.rd_loss_fn(0.01)
    images = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 64, 64), 5, 1, 2)
    for _ in range(15):
        losses = loss_fn(model, images)
        optimizer.zero_grad()
        aux.zero_grad()
        (losses["loss"] + losses["aux_loss"]).backward()
        optimizer.step()
        aux.step()
    return model.eval()


def _photo(height, width, seed=0):
    """A crop of a bundled photo; ``seed`` picks the photo and the window."""
    image = sample_image(("astronaut", "coffee", "chelsea")[seed % 3])
    top, left = 13 * seed, 29 * seed
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def test_symbols_are_what_the_file_holds_and_the_readable_coder_codes_them(tiny_model):
    x = torch.from_numpy(_photo(48, 80)).permute(2, 0, 1)[None].float() / 255
    coded = tiny_model.symbols(x)
    assert coded.y.shape == coded.y_indexes.shape == (1, 12, 3, 5) and coded.z is None
    table = tiny_model.entropy_bottleneck.table()
    # referee: the stream the model writes, decoded with the tables alone
    (stream,) = tiny_model.compress(x)["strings"]
    np.testing.assert_array_equal(fast.decode_with_indexes(stream, coded.y_indexes, table),
                                  coded.y)
    with torch.no_grad():  # 48 x 80 needs no padding: y rounded around the medians
        y = tiny_model.g_a(x)
    medians = tiny_model.entropy_bottleneck.medians.view(1, -1, 1, 1)
    np.testing.assert_array_equal(coded.y, torch.round(y - medians).long().numpy())
    np.testing.assert_array_equal(coded.y_indexes[0, :, 0, 0], np.arange(12))
    assert tiny_model.symbols(x, means=True).means[0, :, 1, 2].tolist() == (
        medians.flatten().double().tolist())
    data = rans.encode_with_indexes(coded.y, coded.y_indexes, table)
    np.testing.assert_array_equal(rans.decode_with_indexes(data, coded.y_indexes, table),
                                  coded.y)
    assert abs(len(data) - len(stream)) <= 4


def test_channel_density_is_the_entropy_models_likelihood(tiny_model):
    bottleneck = tiny_model.entropy_bottleneck
    y = torch.randn(2, 12, 3, 4) * 3
    with torch.no_grad():
        y_hat, likelihoods = bottleneck(y, mode="round")
    for channel in (0, 5, 11):
        values = y_hat[:, channel].reshape(-1).numpy()
        density = rd.channel_density(bottleneck, channel, values)
        # the entropy model bounds likelihoods below by 1e-9
        np.testing.assert_allclose(np.maximum(density, 1e-9),
                                   likelihoods[:, channel].reshape(-1).numpy(), rtol=1e-5)
        grid = np.linspace(-1000, 1000, 20001)  # the untrained tails are wide
        density = rd.channel_density(bottleneck, channel, grid)
        assert np.all(density >= 0)
        assert abs(trapezoid(density, grid) - 1) < 1e-3  # a probability density
    with pytest.raises(ValueError):
        rd.channel_density(bottleneck, 12, [0.0])


def test_measure_codes_a_real_file(tiny_model):
    image = _photo(40, 72, seed=3)
    result = rd.measure(tiny_model, image)
    # referee: the file, coded and decoded here through the codec's container
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes()
                                     for p in tiny_model.parameters())).hexdigest()
    loaded = learned.LoadedModel("notebook06", tiny_model, digest, {})
    data = learned.compress_image(image, 0, loaded)
    decoded = learned.decompress_image(data, loaded)
    assert learned.parse(data).height == 40
    assert result.num_bytes == len(data) and result.bpp == 8 * len(data) / (40 * 72)
    np.testing.assert_array_equal((result.x_hat[0].permute(1, 2, 0) * 255).round().byte(),
                                  decoded)
    assert result.psnr == pytest.approx(peak_signal_noise_ratio(image, decoded, data_range=255),
                                        abs=1e-4)
    estimates = result.estimated_bpp
    # the container adds 31 bytes, the coder at most a few words, to the ideal code length
    overhead = 8 * (31 + 4 + 8 + 4) / (40 * 72)
    assert estimates["tables"] <= result.bpp <= estimates["tables"] + overhead
    # The integer tables' ideal code length against the float model's -sum log2 p of the
    # same rounded latents: two computations, 0.41 % apart measured now (asserted 0.6 %)
    assert estimates["tables"] == pytest.approx(estimates["round"], rel=0.006)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    padded = torch.nn.functional.pad(x, (0, 8, 0, 8), mode="replicate")
    with torch.no_grad():
        bits = rate_bits(tiny_model(padded)["likelihoods"]).item()  # eval: rounded
    assert estimates["round"] * 40 * 72 == pytest.approx(bits, rel=1e-5)
    gap = rd.decoder_input_gap(tiny_model, x)
    # the decoder input of the file: the same pixels, so the same PSNR (measured equal)
    assert gap["round"] == pytest.approx(result.psnr, abs=1e-6)
    assert set(gap) == {"noise", "round"}


def test_relu_variant_swaps_only_the_nonlinearity():
    torch.manual_seed(0)
    gdn = rd.factorized_prior(8, 12, "gdn")
    torch.manual_seed(0)
    relu = rd.factorized_prior(8, 12, "relu")
    assert not any(isinstance(layer, GDN) for layer in relu.modules())
    assert sum(isinstance(layer, GDN) for layer in gdn.modules()) == 6
    gdn_weights = {k: v for k, v in gdn.state_dict().items() if "weight" in k or "bias" in k}
    relu_weights = relu.state_dict()
    for key, value in gdn_weights.items():
        if key in relu_weights and torch.is_tensor(value):
            torch.testing.assert_close(relu_weights[key], value)
    gdn_parameters = sum(p.numel() for m in gdn.modules() if isinstance(m, GDN)
                         for p in m.parameters())
    assert parameter_count(gdn) - parameter_count(relu) == gdn_parameters
    with pytest.raises(ValueError):
        rd.factorized_prior(8, 12, "tanh")


def test_saved_weights_load_with_current_tables_and_checksums(tiny_model, tmp_path,
                                                              ship_weights):
    config = {"n": 8, "m": 12, "activation": "gdn", "decoder_quantization": "ste"}
    model = rd.factorized_prior(8, 12)
    model.load_state_dict(tiny_model.state_dict())
    learned.save_weights(model, config, tmp_path / "tiny.pt")
    shipped = ship_weights("notebook06/tiny.pt", (tmp_path / "tiny.pt").read_bytes())
    loaded = rd.load_pretrained("tiny")
    assert loaded.config == config and loaded.decoder_quantization == "ste"
    assert not loaded.training
    assert loaded.entropy_bottleneck.tables_are_current()  # no rebuild: tables as saved
    for key, value in model.state_dict().items():
        if torch.is_tensor(value):  # the file may hold float16: equal up to that rounding
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=1e-3, atol=1e-6)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        y = loaded.g_a(x)
    bottleneck = loaded.entropy_bottleneck
    medians = bottleneck.medians.view(1, -1, 1, 1)
    # the loaded tables decode the values they coded: y rounded around the medians
    torch.testing.assert_close(bottleneck.decompress(bottleneck.compress(y), y.shape),
                               torch.round(y - medians) + medians, rtol=0, atol=0)
    assert rd.weights_dir() == shipped.parent
    with pytest.raises(ValueError, match="no model 'other'.*shipped: \\['tiny'\\]"):
        rd.load_pretrained("other")
    damaged = bytearray(shipped.read_bytes())
    damaged[-20] ^= 1
    shipped.write_bytes(bytes(damaged))
    with pytest.raises(learned.WeightsError, match="sha256"):
        rd.load_pretrained("tiny")


def test_train_rd_runs_the_recipe_and_checks_its_arguments():
    torch.manual_seed(0)
    model = rd.factorized_prior(8, 12)
    result = rd.train_rd(model, 4, decoder_quantization="ste", patch_size=32,
                               batch_size=2, num_images=4, log_every=2)
    assert result.step == 4 and model.decoder_quantization == "ste"
    assert {"loss", "bpp", "mse", "psnr", "aux_loss"} <= set(result.history[-1])
    row = result.history[-1]
    assert row["psnr"] == pytest.approx(-10 * np.log10(row["mse"]), rel=0.05)
    with pytest.raises(ValueError):
        rd.train_rd(model, 4, decoder_quantization="round")
    with pytest.raises(ValueError):
        rd.train_rd(model, 4, patch_size=40)


def test_scalar_quantizer_rd_and_the_lagrangian_choice():
    rng = np.random.default_rng(0)
    samples = rng.laplace(0, 2, 20000)
    steps = [0.25, 0.5, 1.0, 2.0, 4.0]
    rates, distortions = rd.scalar_quantizer_rd(samples, steps)
    assert np.all(np.diff(rates) < 0) and np.all(np.diff(distortions) > 0)
    assert rates[2] == pytest.approx(empirical_entropy(np.round(samples)), rel=1e-12)
    np.testing.assert_allclose(distortions, np.array(steps) ** 2 / 12, rtol=0.15)  # fine steps
    assert rd.lagrangian_choice(rates, distortions, 1e-6) == len(steps) - 1
    assert rd.lagrangian_choice(rates, distortions, 1e6) == 0
    brute = min(range(len(steps)), key=lambda i: rates[i] + 3.0 * distortions[i])
    assert rd.lagrangian_choice(rates, distortions, 3.0) == brute
    with pytest.raises(ValueError):
        rd.scalar_quantizer_rd(samples, [0.0])
    with pytest.raises(ValueError):
        rd.lagrangian_choice(rates, distortions, 0)


def test_channel_explorer_draws_and_ranks_channels(tiny_model, shown_titles):
    image = _photo(48, 64, seed=5)  # a multiple of 16: no padding
    costs = widget.channel_costs(tiny_model, image)
    channel_bits = costs.bits.sum(axis=(1, 2))
    assert np.all(np.diff(channel_bits[costs.order]) <= 0)  # most expensive first
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    np.testing.assert_array_equal(costs.symbols, tiny_model.symbols(x).y[0])
    # referees: the real stream (a few bytes of coder overhead over the ideal code length),
    # and the float model's -log2 p, which the integer tables follow closely
    (stream,) = tiny_model.compress(x)["strings"]
    assert 0 <= 8 * len(stream) - channel_bits.sum() < 8 * 16
    with torch.no_grad():
        likelihoods = tiny_model(x)["likelihoods"]["y"][0].double()
    float_bits = (-torch.log2(likelihoods)).sum(dim=(1, 2)).numpy()
    np.testing.assert_allclose(channel_bits, float_bits, rtol=0.02, atol=1.0)
    assert costs.z_bits == 0 and costs.pixels == 48 * 64

    panel = widget.channel_explorer(tiny_model, image, rank=2)
    slider = panel.children[0]
    ranked = np.argsort(-channel_bits, kind="stable")
    for rank in (2, 0, 11):
        slider.value = rank
        titles = [title for title in shown_titles[-1] if title]
        channel, bits = ranked[rank], channel_bits[ranked[rank]]
        assert titles == [
            f"image: {channel_bits.sum() / (48 * 64):.3f} bpp estimated",
            f"channel {channel}: coded integers",
            f"bits per position: {bits:.0f} in all",
            f"rank {rank}: {bits / (48 * 64):.4f} bpp ({bits / channel_bits.sum():.1%} of the "
            "total)"]
    assert shown_titles[-1] != shown_titles[-2]
    with pytest.raises(ValueError):
        widget.channel_explorer(tiny_model, image, rank=12)


def test_factorized_prior_codes_through_the_file_container(tiny_model):
    # The container passes a rate to every model; the single-rate model accepts None or 0.
    loaded = learned.LoadedModel("tiny", tiny_model, "ab" * 32, {})
    image = _photo(36, 52, seed=7)
    data = learned.compress_image(image, 0, loaded)
    decoded = learned.decompress_image(data, loaded)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    padded = torch.nn.functional.pad(x, (0, 12, 0, 12), mode="replicate")
    expected = tiny_model.decompress(**tiny_model.compress(padded))[..., :36, :52]
    np.testing.assert_array_equal(decoded, (expected[0].permute(1, 2, 0) * 255).round().byte())
    with pytest.raises(ValueError, match="single rate"):
        tiny_model.compress(padded, rate=1)
