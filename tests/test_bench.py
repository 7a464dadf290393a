import numpy as np
import pytest

from course_lib import bench
from course_lib.images import center_crop


def test_bd_rate_of_a_scaled_curve_is_the_scale():
    psnr = np.array([28.0, 31.0, 34.0, 37.0])
    rate = np.array([0.2, 0.45, 0.9, 1.7])
    assert bench.bd_rate(rate, psnr, rate * 0.7, psnr) == pytest.approx(-30.0, abs=1e-9)
    assert bench.bd_rate(rate, psnr, rate, psnr) == pytest.approx(0.0, abs=1e-12)


def test_bd_rate_uses_only_the_overlap():
    # Log-rate linear in PSNR (pchip reproduces it exactly); the test curve needs twice the
    # rate, sampled at other PSNRs and reaching beyond the reference (integrated on 29.5..37).
    psnr = np.array([28.0, 31.0, 34.0, 37.0])
    rate = np.exp(-9.0 + 0.25 * psnr)
    test_psnr = np.array([29.5, 33.0, 36.5, 40.0])
    test_rate = 2 * np.exp(-9.0 + 0.25 * test_psnr)
    assert bench.bd_rate(rate, psnr, test_rate, test_psnr) == pytest.approx(100.0, abs=1e-6)


def test_bd_rate_errors():
    with pytest.raises(ValueError, match="overlap"):
        bench.bd_rate([0.1, 0.2], [20, 22], [0.5, 1.0], [30, 32])
    with pytest.raises(ValueError, match="lossless"):
        bench.bd_rate([0.1, 0.2], [20, np.inf], [0.5, 1.0], [30, 32])


def test_bd_rate_matrix_of_power_law_curves():
    # rate = c * MSE^-0.6 with MSE = 255^2 10^(-PSNR/10): log-rate is linear in PSNR, so pchip
    # is exact and a curve with c times the rate has a BD-rate of (c - 1) * 100 % wherever the
    # curves overlap, whatever PSNRs they were sampled at.
    def curve(scale, psnr):
        psnr = np.asarray(psnr, float)
        return scale * (255.0**2 * 10 ** (-psnr / 10)) ** -0.6, psnr

    curves = {"reference": curve(1.0, [26, 30, 34, 38]), "half": curve(0.5, [27, 31.5, 36]),
              "more": curve(1.6, [25, 29, 33, 37, 41]), "apart": curve(1.0, [45, 48])}
    table = bench.bd_rate_matrix(curves)
    assert table["half", "reference"] == pytest.approx(-50.0, abs=1e-9)
    assert table["reference", "half"] == pytest.approx(100.0, abs=1e-9)
    assert table["more", "reference"] == pytest.approx(60.0, abs=1e-9)
    assert table["more", "half"] == pytest.approx(220.0, abs=1e-9)
    assert table["half", "more"] == pytest.approx(-68.75, abs=1e-9)
    assert np.isnan(table["apart", "reference"]) and np.isnan(table["half", "apart"])
    assert ("half", "half") not in table and len(table) == 4 * 3
    with pytest.raises(ValueError, match="lossless"):  # only a missing overlap gives NaN
        bench.bd_rate_matrix({"reference": curves["reference"], "png": ([4.5, 4.6], [40, np.inf])})


def test_classical_curve_averages_over_images(kodak_image):
    crops = [center_crop(kodak_image, 192), np.ascontiguousarray(kodak_image[:192, :192])]
    points = bench.classical_rd_curve(crops, "jpeg", [20, 60])
    assert [p.images for p in points] == [2, 2]
    assert points[0].bpp < points[1].bpp and points[0].psnr < points[1].psnr
    from course_lib.codecs import classical

    single = [classical.evaluate(crop, "jpeg", 20).bpp for crop in crops]
    assert points[0].bpp == pytest.approx(np.mean(single))
