"""PNG's filters written out (course_lib.codecs.png) against the specification and Pillow: the
files they make are real PNGs that Pillow reads back pixel for pixel."""

import io

import numpy as np
import pytest
from PIL import Image

from course_lib.codecs import png


def paeth_by_the_book(a: int, b: int, c: int) -> int:
    """PNG specification, section 9.4, one byte at a time."""
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    if pb <= pc:
        return b
    return c


def test_paeth_matches_the_specification():
    rng = np.random.default_rng(0)
    a, b, c = rng.integers(0, 256, (3, 3000))
    expected = [paeth_by_the_book(*abc) for abc in zip(*(a.tolist(), b.tolist(), c.tolist()),
                                                           strict=True)]
    assert png.paeth(a, b, c).tolist() == expected


@pytest.mark.parametrize("kind", [*png.FILTERS, png.ADAPTIVE])
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (9, 4, 3), (1, 6, 3)])
def test_our_png_files_decode_in_pillow_to_the_same_pixels(kind, shape):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    with Image.open(io.BytesIO(png.png_file(image, kind))) as decoded:
        assert np.array_equal(np.asarray(decoded), image)


def test_filters_of_a_ramp_leave_what_they_cannot_predict():
    ramp = np.add.outer(np.arange(6), 2 * np.arange(8)).astype(np.uint8)  # x = row + 2 col
    assert np.all(png.filtered(ramp, "Sub")[:, 1:] == 2)
    assert np.all(png.filtered(ramp, "Up")[1:] == 1)
    # a + b - c is exact on a plane, but Paeth picks the nearest of a, b, c to it: b, 1 off
    assert np.all(png.filtered(ramp, "Paeth")[1:, 1:] == 1)


def test_adaptive_rows_pick_the_smallest_sum_and_unknown_filters_are_refused():
    image = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image[4:] = 50
    lines = np.frombuffer(png.scanlines(image), np.uint8).reshape(8, -1)
    assert set(lines[4:, 0]) <= {1, 2, 4}  # a flat band is predicted exactly by these
    with pytest.raises(ValueError, match="unknown PNG filter"):
        png.predictions(image, "Median")


# --- notebook 09's residual widget ------------------------------------------------------------


def test_widget_residuals_follow_the_coders_predictors():
    from course_lib.codecs import lossless
    from course_lib.widgets import lossless as lossless_widgets

    plane = np.random.default_rng(3).integers(0, 256, (12, 17), dtype=np.uint8)
    med = lossless_widgets.residuals(plane, "MED (LOCO-I)")
    expected = plane.astype(np.int32) - lossless.predict(plane, tile=lossless.MAX_TILE)
    assert np.array_equal(med, (expected + 128) % 256 - 128)
    ramp = np.add.outer(np.arange(9), 3 * np.arange(11)).astype(np.uint8)
    inner = lossless_widgets.residuals(ramp, "4 neighbours (polyphase)")[1:-1, 1:-1]
    assert np.all(inner == 0)  # the average of opposite neighbours is exact on a plane
    with pytest.raises(ValueError, match="unknown predictor"):
        lossless_widgets.residuals(plane, "CALIC")


def test_the_widget_draws_its_default_figure_with_the_bits(shown_titles):
    from course_lib.entropy import empirical_entropy
    from course_lib.widgets import lossless as lossless_widgets

    plane = np.random.default_rng(4).integers(0, 256, (20, 30), dtype=np.uint8)
    lossless_widgets.residual_explorer({"noise": plane}, "Up")
    bits = empirical_entropy(lossless_widgets.residuals(plane, "Up"))
    assert f"{bits:.2f} bits/pixel" in shown_titles[-1][-1]
