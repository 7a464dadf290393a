"""Notebook 10's demo: every codec at one budget. The search for the largest setting that fits
is refereed by trying every JPEG quality with Pillow."""

import io

import numpy as np
import pytest
from PIL import Image

from course_lib.widgets import benchmark as bench_widgets


def _photo(height=48, width=64, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float64)
    big = np.kron(base, np.ones((8, 8, 1)))[:height, :width]
    return np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


def _jpeg_bits(image, quality):
    stream = io.BytesIO()
    Image.fromarray(image).save(stream, "JPEG", quality=quality, subsampling="4:2:0",
                                optimize=True)
    return 8 * len(stream.getvalue())


@pytest.mark.parametrize("budget_bpp", [0.3, 2.0, 4.0])
def test_jpeg_at_a_budget_is_the_largest_quality_that_fits(budget_bpp):
    image = _photo()
    setting, bpp, psnr, decoded = bench_widgets.at_budget("jpeg", image, budget_bpp)
    budget_bits = budget_bpp * image.shape[0] * image.shape[1]
    fitting = [q for q in range(1, 101) if _jpeg_bits(image, q) <= budget_bits]
    assert setting == (max(fitting) if fitting else 1)  # nothing fits: the smallest file
    assert bpp == pytest.approx(_jpeg_bits(image, setting) / (image.shape[0] * image.shape[1]))
    assert decoded.shape == image.shape and 10 < psnr < 60


def test_a_fractional_setting_fits_and_a_little_more_does_not():
    sizes = lambda setting: 1000 * setting  # noqa: E731
    found = bench_widgets.largest_within(sizes, 0.0, 3.0, 1700, integer=False, steps=12)
    assert sizes(found) <= 1700 < sizes(found + 3.0 / 2**11)


def test_the_widget_starts_empty_and_bad_budgets_are_refused():
    explorer = bench_widgets.budget_explorer(["jpeg", "webp"], crop=True)
    controls, panel = explorer.children
    assert [child.description for child in controls.children] == ["image", "bpp budget"]
    assert panel.outputs == ()
    with pytest.raises(ValueError, match="positive"):
        bench_widgets.at_budget("jpeg", _photo(), 0)
    with pytest.raises(ValueError, match="lossless"):
        bench_widgets.at_budget("png", _photo(), 1.0)
