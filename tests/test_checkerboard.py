"""The checkerboard context model, the encoder's search for latents (effort) and the training
options that go with them."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import datasets
from course_lib.codecs import learned
from course_lib.entropy.errors import DecodeError
from course_lib.models import (
    CheckerboardMeanScale,
    MaskedConv2d,
    MeanScaleHyperprior,
    anchor_mask,
    build_model,
    rate_bits,
)
from course_lib.recipes import codec_training
from course_lib.refine import EFFORT_STEPS, rd_cost, refine_latents, sga_round


def _smooth(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return F.avg_pool2d(torch.rand(shape, generator=generator), 5, 1, 2)


@pytest.fixture(scope="module")
def model():
    """A small checkerboard model with a context that matters (random, not zero, last layer)."""
    torch.manual_seed(0)
    net = CheckerboardMeanScale(16, 24, num_rates=2)
    torch.nn.init.normal_(net.entropy_parameters[-1].weight, std=0.05)
    net.update(force=True)
    return net.eval()


def test_masked_convolution_sees_only_anchors_around_a_non_anchor():
    torch.manual_seed(0)
    conv = MaskedConv2d(3, 4, 5)
    x = torch.randn(1, 3, 12, 12)
    anchors = anchor_mask(12, 12)
    others = torch.randn(1, 3, 12, 12) * ~anchors  # change every non-anchor value
    moved = torch.randn(1, 3, 12, 12) * anchors  # change anchors
    with torch.no_grad():
        base, same, changed = conv(x), conv(x + others), conv(x + moved)
    assert torch.equal(base[..., ~anchors], same[..., ~anchors])
    assert (changed[..., ~anchors] - base[..., ~anchors]).abs().max() > 0.1
    # the 12 taps at an odd distance from the centre of a 5 x 5 kernel, as in He et al.
    assert int(conv.mask[0, 0].sum()) == 12 and conv.mask[0, 0, 2, 2] == 0


def test_a_context_model_grown_from_a_mean_scale_model_starts_where_that_was():
    torch.manual_seed(1)
    base = MeanScaleHyperprior(16, 24, num_rates=2).eval()
    grown = CheckerboardMeanScale.from_mean_scale(base.state_dict(), 16, 24, 2).eval()
    x = _smooth((2, 3, 64, 64))
    with torch.no_grad():
        a, b = base(x, torch.tensor([0, 1])), grown(x, torch.tensor([0, 1]))
    assert torch.equal(a["likelihoods"]["y"], b["likelihoods"]["y"])
    assert torch.equal(a["x_hat"], b["x_hat"])
    with pytest.raises(ValueError, match="mean-scale"):
        CheckerboardMeanScale.from_mean_scale({"unrelated": torch.zeros(1)}, 16, 24, 2)


def test_inference_parameters_equal_the_convolutions_of_training(model):
    """The decoder's matrix products over bands (anchor taps only) against the training-time
    convolutions (masked conv2d and 1 x 1 convolutions), both in float64."""
    hyper = torch.randn(1, 48, 9, 11, dtype=torch.float64)
    y_anchors = torch.randn(1, 24, 9, 11, dtype=torch.float64) * anchor_mask(9, 11)
    reference = model.double()
    try:
        with torch.no_grad():
            scales_a, means_a = reference._parameters_with_context(hyper, None)
            context = reference.context_prediction(y_anchors)
            scales_n, means_n = reference._parameters_with_context(hyper, context)
        for part, y, scales, means in ((anchor_mask(9, 11), None, scales_a, means_a),
                                       (~anchor_mask(9, 11), y_anchors, scales_n, means_n)):
            got_scales, got_means = reference._pass_parameters(hyper, y, part)
            torch.testing.assert_close(got_scales, scales[..., part], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(got_means, means[..., part], rtol=1e-12, atol=1e-12)
    finally:
        model.float()


def test_round_trip_gives_the_decoder_the_encoders_latents(model):
    x = _smooth((1, 3, 128, 192), seed=2)
    result = model.compress(x, 1.0)
    assert len(result["strings"]) == 3
    decoded = model.decompress(result["strings"], result["shape"], 1.0)
    y, z = model.analysis(x, 1.0)
    with torch.no_grad():
        rounded = model.relaxed_terms(y, z, 1.0, lambda v, o: torch.round(v - o) + o)
    # the codec computes means in float64, training in float32: at most float32 rounding
    assert (decoded - rounded["x_hat"].clamp(0, 1)).abs().max() < 1e-4
    # real bytes against the estimated rate of the rounded latents
    estimated = rate_bits(rounded["likelihoods"]).item() / 8
    real = sum(len(s) for s in result["strings"])
    assert abs(real - estimated) < 0.02 * estimated + 40


def test_bytes_and_pixels_do_not_depend_on_threads_or_tiles(model):
    x = _smooth((1, 3, 192, 256), seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = model.compress(x, 0.5)
        pixels_one = model.decompress(one["strings"], one["shape"], 0.5)
        torch.set_num_threads(2)
        two = model.compress(x, 0.5, tile=64)
        pixels_two = model.decompress(two["strings"], two["shape"], 0.5, tile=64)
    finally:
        torch.set_num_threads(threads)
    assert one["strings"] == two["strings"]
    assert torch.equal(pixels_one, pixels_two)


def test_a_damaged_stream_is_refused(model):
    x = _smooth((1, 3, 64, 64), seed=4)
    strings = model.compress(x, 1.0)["strings"]
    with pytest.raises(ValueError, match="three parts"):
        model.decompress(strings[:2], (1, 1), 1.0)
    broken = [strings[0], strings[1][: len(strings[1]) // 2], strings[2]]
    with pytest.raises((DecodeError, ValueError)):
        model.decompress(broken, (1, 1), 1.0)


def test_sga_rounds_between_the_neighbouring_integers_and_becomes_rounding():
    generator = torch.Generator().manual_seed(0)
    values = torch.linspace(-3, 3, 1001, dtype=torch.float64).requires_grad_(True)
    soft = sga_round(values, 0.25, 0.5, generator)
    floor = torch.floor(values.detach() - 0.25) + 0.25
    assert ((soft >= floor - 1e-12) & (soft <= floor + 1 + 1e-12)).all()
    soft.sum().backward()
    assert values.grad.abs().sum() > 0  # a gradient to follow
    cold = sga_round(values.detach(), 0.25, 0.01, generator)
    nearest = torch.round(values.detach() - 0.25) + 0.25
    # at a low temperature it rounds to the nearer integer except right at the midpoints
    away = (values.detach() - nearest).abs() < 0.45
    assert (cold[away] - nearest[away]).abs().max() < 1e-6


@pytest.mark.parametrize("name", learned.SHIPPED_MODELS)
def test_refinement_lowers_the_rounded_cost_of_the_shipped_codec(kodak_image, name):
    """Twenty steps of the search on a Kodak crop with the shipped weights: a lower rounded
    rate–distortion cost than the transforms' latents (measured: 0.7 % with the context
    model, over 1 % with the hyperprior; 100 steps gave 3–7 % on kodim04)."""
    loaded = learned.load_shipped(name)
    x = torch.from_numpy(kodak_image[:128, :192]).permute(2, 0, 1)[None].float() / 255
    lmbda = learned.lambda_at(loaded.config, 1.0)
    (y, z), history = refine_latents(loaded.model, x, 1.0, lmbda, 20, evaluate_every=5)
    assert [h["step"] for h in history] == [0, 5, 10, 15, 20]
    best = min(h["loss"] for h in history)
    assert best < 0.995 * history[0]["loss"]
    with torch.no_grad():
        cost = rd_cost(loaded.model, x, (y, z), 1.0, lmbda)
    assert float(cost["loss"]) == pytest.approx(best, rel=1e-5)
    assert not any(p.requires_grad is False for p in loaded.model.parameters())


def test_effort_gives_a_file_with_a_lower_real_cost(kodak_image):
    """Real bytes and decoded pixels: bpp + λ·255²·MSE is lower at effort 1 than at 0."""
    loaded = learned.load_shipped()
    image = kodak_image[:100, :150]  # not a multiple of 64: padding is left out of the cost
    lmbda = learned.lambda_at(loaded.config, 0.0)

    def cost(data):
        decoded = learned.decompress_image(data).astype(np.float64)
        mse = np.mean((decoded - image) ** 2) / 255**2
        return len(data) * 8 / image[..., 0].size + lmbda * 255**2 * mse

    fast, searched = (learned.compress_image(image, 0.0, effort=e) for e in (0, 1))
    assert cost(searched) < cost(fast)
    assert EFFORT_STEPS[0] == 0 and EFFORT_STEPS[1] < EFFORT_STEPS[2]
    for effort in (-1, 3, True, 1.5):
        with pytest.raises(ValueError, match="effort"):
            learned.compress_image(image, 0.0, effort=effort)


def test_lambda_at_interpolates_geometrically():
    config = {"lambdas": [0.001, 0.004, 0.016]}
    assert learned.lambda_at(config, 0) == pytest.approx(0.001)
    assert learned.lambda_at(config, 2) == pytest.approx(0.016)
    assert learned.lambda_at(config, 0.5) == pytest.approx(0.002)
    assert learned.lambda_at(config, 1.5) == pytest.approx(0.008)


def test_training_grows_a_context_model_from_mean_scale_weights(tmp_path):
    config = {"architecture": "mean-scale", "n": 8, "m": 12, "num_rates": 2,
              "lambdas": [0.01, 0.05]}
    torch.manual_seed(0)
    start = tmp_path / "start.pt"
    learned.save_weights(build_model(config), config, start)
    run = tmp_path / "run"
    codec_training.main(["--run-dir", str(run), "--architecture", "checkerboard",
                         "--init", str(start), "--channels", "8", "--latent-channels", "12",
                         "--lambdas", "0.01,0.05", "--steps", "2", "--batch-size", "2",
                         "--patch-size", "64", "--images", "4", "--workers", "0",
                         "--device", "cpu", "--downscale", "0.5", "0.5"])
    out = tmp_path / "cb.pt"
    codec_training.export(["--run-dir", str(run), "--out", str(out)])
    loaded = learned.load_weights(out)
    assert isinstance(loaded.model, CheckerboardMeanScale)
    assert loaded.config["architecture"] == "checkerboard"
    initial = torch.load(start, weights_only=True)["state_dict"]
    # the transforms came from the start file (then moved by two steps of training)
    moved = (loaded.model.g_a[0].weight - initial["g_a.0.weight"].float()).abs().max()
    assert 0 < moved < 0.05


def test_downscaled_crops_have_the_detail_of_a_smaller_copy(tmp_path):
    """A one-pixel stripe pattern shrunk with antialiasing turns grey: crops from shrunk
    copies have far less variance than crops of the image itself."""
    from course_lib.images import save_image

    stripes = np.zeros((160, 160, 3), np.uint8)
    stripes[:, ::2] = 255
    path = tmp_path / "stripes.png"
    save_image(stripes, path)
    plain = datasets.PatchDataset([path], 64, train=True)
    shrunk = datasets.PatchDataset([path], 64, train=True, downscale=(1.0, 0.5))
    torch.manual_seed(0)
    assert all(float(plain[0].var()) > 0.2 for _ in range(4))
    variances = np.array([float(shrunk[0].var()) for _ in range(50)])
    # a factor that rounds back to 160 pixels leaves the stripes: rarely (2 in 200 measured)
    assert (variances < 0.15).sum() >= 45
    assert all(shrunk[0].shape == (3, 64, 64) for _ in range(4))
    with pytest.raises(ValueError, match="downscale"):
        datasets.PatchDataset([path], 64, downscale=(2.0, 0.5))


def test_the_gpu_preset_fills_in_options_that_the_command_line_does_not_give():
    args = codec_training.parse_arguments(["--run-dir", "r", "--preset", "gpu"])
    preset = codec_training.PRESETS["gpu"]
    assert (args.architecture, args.patch_size, args.batch_size, args.steps, args.amp,
            args.minutes) == ("checkerboard", 256, 16, 8000, True, 10.0) == (
        preset["architecture"], preset["patch_size"], preset["batch_size"], preset["steps"],
        preset["amp"], preset["minutes"])
    mine = codec_training.parse_arguments(["--run-dir", "r", "--preset", "gpu", "--steps", "5",
                                           "--no-amp"])
    assert (mine.steps, mine.amp, mine.patch_size) == (5, False, 256)
    plain = codec_training.parse_arguments(["--run-dir", "r"])
    assert plain.architecture == "mean-scale" and plain.minutes is None


def test_the_gpu_preset_runs_its_logic_on_a_cpu(tmp_path, monkeypatch):
    """The preset's command with the GPU-only parts overridden (device, bfloat16, size), the
    shipped weights as its start and a time budget that stops it after the first step."""
    monkeypatch.setenv("COURSE_FAST", "1")
    run = tmp_path / "run"
    codec_training.main(["--run-dir", str(run), "--preset", "gpu", "--device", "cpu",
                         "--no-amp", "--batch-size", "1", "--patch-size", "64", "--images",
                         "2", "--workers", "0", "--minutes", "1e-6"])
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 1  # stopped by --minutes, with a checkpoint to resume
    shipped = torch.load(learned.weights.path("codec/mean-scale-vr.pt"), weights_only=True)
    start = shipped["state_dict"]["g_s.6.weight"].float()
    trained = checkpoint["model"]["g_s.6.weight"]
    assert 0 < (trained - start).abs().max() < 0.01  # from the shipped weights, one step on


def test_state_dict_has_no_side_effects_and_the_decoder_refuses_stale_tables():
    from course_lib.entropy_models import StaleTablesError

    torch.manual_seed(0)
    net = MeanScaleHyperprior(16, 24).eval()
    net.update(force=True)
    x = _smooth((1, 3, 64, 64), seed=5)
    result = net.compress(x)
    with torch.no_grad():
        net.entropy_bottleneck.quantiles.add_(0.5)  # the parameters move, as in training
    before = net.entropy_bottleneck._cdf_fingerprint.clone()
    state = net.state_dict()
    saved = state["entropy_bottleneck._extra_state"]["_cdf_fingerprint"]
    assert torch.equal(torch.as_tensor(saved), before)  # saving did not rebuild the tables
    assert not net.entropy_bottleneck.tables_are_current()
    with pytest.raises(StaleTablesError, match="update"):
        net.decompress(result["strings"], result["shape"])
    net.update()
    assert net.entropy_bottleneck.tables_are_current()


@pytest.mark.parametrize("architecture", ["factorized", "mean-scale", "checkerboard"])
def test_one_image_in_one_image_out(architecture):
    """The codec API's rule for batches: compress takes one image and decompress gives one."""
    net = build_model({"architecture": architecture, "n": 8, "m": 12}).eval()
    with pytest.raises(ValueError, match="one image at a time"):
        net.compress(torch.rand(2, 3, 64, 64))
    result = net.compress(torch.rand(1, 3, 64, 64))
    assert net.decompress(result["strings"], result["shape"]).shape == (1, 3, 64, 64)
