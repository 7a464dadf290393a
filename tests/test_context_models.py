"""The context models of ``benchmarks/context_models.py`` (the measured comparison of the
checkerboard and channel-conditional slices): each must be decodable in its own order, start
at the hyperprior, and evaluate at exactly what the codec would code."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from course_lib.codecs import learned
from course_lib.models import anchor_mask, rate_bits

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "context_models.py"
_spec = importlib.util.spec_from_file_location("context_models", SCRIPT)
context_models = sys.modules["context_models"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(context_models)

M = 20


def _trained_like(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The module with every parameter random (a zero last layer would hide dependencies)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return module.eval()


def _inputs(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    p0 = torch.randn(1, 2 * M, 6, 7, generator=generator)
    y = torch.randn(1, M, 6, 7, generator=generator) * 3
    return p0, y


_round = context_models._round


def _y_bits(model, y_hat, scales, means) -> float:
    return float(rate_bits({"y": model.gaussian_conditional.likelihood(y_hat, scales, means)}))


@pytest.mark.parametrize("make", [context_models.Hyperprior,
                                  lambda: context_models.CheckerboardContext(M),
                                  lambda: context_models.ChannelContext(M, 4, widths=(8, 6))])
def test_new_models_start_at_the_hyperprior(make):
    p0, y = _inputs()
    scales, means = make()(p0, y, _round)
    assert torch.equal(torch.cat([scales, means], dim=1), p0)


def test_channel_slices_see_only_the_slices_before_them():
    model = _trained_like(context_models.ChannelContext(M, 4, widths=(8, 6)))
    p0, y = _inputs()
    size = M // 4
    with torch.no_grad():
        scales, means = model(p0, y, _round)
        for k in range(4):
            changed = y.clone()
            changed[:, k * size:] += 5.0  # slice k and after, as the decoder has them not yet
            s2, m2 = model(p0, changed, _round)
            before = slice(0, (k + 1) * size)
            assert torch.equal(scales[:, before], s2[:, before])
            assert torch.equal(means[:, before], m2[:, before])
            if k < 3:  # and the later slices do depend on slice k
                assert not torch.equal(means[:, (k + 1) * size:], m2[:, (k + 1) * size:])


def test_checkerboard_non_anchors_see_only_anchors():
    model = _trained_like(context_models.CheckerboardContext(M))
    p0, y = _inputs()
    anchors = anchor_mask(*y.shape[-2:])
    with torch.no_grad():
        scales, means = model(p0, y, _round)
        others = y.clone()
        others[..., ~anchors] += 5.0  # the non-anchors change: no parameter may move
        s2, m2 = model(p0, others, _round)
        assert torch.equal(scales, s2) and torch.equal(means, m2)
        moved = y.clone()
        moved[..., anchors] += 5.0  # the anchors change: the non-anchors' parameters move
        s3, m3 = model(p0, moved, _round)
        assert torch.equal(means[..., anchors], m3[..., anchors])
        assert not torch.equal(means[..., ~anchors], m3[..., ~anchors])


def test_shipped_context_row_is_what_the_codec_codes():
    """The comparison's "checkerboard, shipped" row: its bits of y are the codec's estimate
    for the same latents (the shipped model's own symbols and parameters)."""
    loaded = learned.load_shipped("checkerboard-vr")
    model = loaded.model
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    y, _, sources = context_models.hyper_and_p0(model, x, 1)
    shipped = context_models.ShippedContext(model)
    with torch.no_grad():
        scales, means = shipped(sources[shipped.reads], y, _round)
        ours = _y_bits(model, _round(y, means), scales, means)
        symbols = model.symbols(x, 1, means=True)
    codec = torch.from_numpy(symbols.y + symbols.means).float()  # float64 in the codec
    ours_hat = _round(y, means)
    assert float(((codec - ours_hat).abs() < 1e-3).float().mean()) > 0.999
    theirs = _y_bits(model, codec, scales, means)
    assert float(ours) == pytest.approx(float(theirs), rel=2e-3)
