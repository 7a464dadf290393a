import io

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin
from skimage.metrics import peak_signal_noise_ratio

from course_lib.codecs import classical
from course_lib.images import ImageError, center_crop


@pytest.fixture(scope="module")
def crop(kodak_image):
    return np.ascontiguousarray(center_crop(kodak_image, 192, 256))


@pytest.mark.parametrize("codec", ["jpeg", "jpeg444", "webp", "avif", "jpeg2000"])
def test_lossy_codecs_round_trip_and_measure(crop, codec):
    spec = classical.get_codec(codec)
    result = classical.evaluate(crop, codec, spec.settings[5])
    assert result.reconstruction.shape == crop.shape
    assert result.bpp == pytest.approx(8 * result.num_bytes / (192 * 256))
    assert result.psnr == pytest.approx(
        peak_signal_noise_ratio(crop, result.reconstruction, data_range=255), abs=1e-4)
    assert 22 < result.psnr < 50
    assert 0.8 < result.ms_ssim <= 1.0
    assert result.encode_s > 0 and result.decode_s > 0


@pytest.mark.parametrize("codec", ["png", "webp_lossless"])
def test_lossless_codecs_are_exact(crop, codec):
    result = classical.evaluate(crop, codec)
    np.testing.assert_array_equal(result.reconstruction, crop)
    assert result.psnr == float("inf")
    assert 4 < result.bpp < 24


def test_jpeg_wrapper_is_pillow_with_the_convention_settings(crop):
    ours = classical.encode(crop, "jpeg", 50)
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="JPEG", quality=50, optimize=True, subsampling=2)
    assert ours == buffer.getvalue()
    decoded = np.array(Image.open(io.BytesIO(ours)).convert("RGB"))
    np.testing.assert_array_equal(classical.decode(ours), decoded)


def test_jpeg_chroma_subsampling_modes(crop):
    sampling_420 = JpegImagePlugin.get_sampling(Image.open(io.BytesIO(
        classical.encode(crop, "jpeg", 75))))
    sampling_444 = JpegImagePlugin.get_sampling(Image.open(io.BytesIO(
        classical.encode(crop, "jpeg444", 75))))
    assert (sampling_420, sampling_444) == (2, 0)


def test_rate_grows_with_setting(crop):
    for codec in ["jpeg", "webp", "jpeg2000"]:
        settings = classical.CODECS[codec].settings[::3]
        rates = [result.bpp for result in classical.rd_curve(crop, codec, settings)]
        assert rates == sorted(rates), codec  # default sweeps go from low to high rate


@pytest.mark.parametrize("codec", ["jpeg", "webp", "jpeg2000"])
def test_at_target_bpp(crop, codec):
    result = classical.at_target_bpp(crop, codec, 0.8)
    assert result.bpp <= 0.8
    if codec != "jpeg2000":
        higher = classical.evaluate(crop, codec, result.setting + 1)
        assert higher.bpp > 0.8  # the next quality up overshoots: the search found the best
    else:
        assert result.bpp > 0.7


def test_at_target_bpp_below_lowest_setting_returns_lowest_rate(crop):
    result = classical.at_target_bpp(crop, "jpeg", 0.01)
    assert result.setting == 1


def test_bad_inputs_give_clear_errors(crop):
    with pytest.raises(ValueError, match="unknown codec"):
        classical.encode(crop, "gif", 50)
    with pytest.raises(ValueError, match="quality"):
        classical.encode(crop, "jpeg", 150)
    with pytest.raises(ValueError, match="needs a quality"):
        classical.encode(crop, "webp")
    with pytest.raises(ImageError, match="uint8 RGB"):
        classical.encode(crop.astype(np.float32), "png")
    data = classical.encode(crop, "jpeg", 50)
    with pytest.raises(ImageError, match="damaged"):
        classical.decode(data[: len(data) // 3] + b"garbage")
    with pytest.raises(ImageError, match="damaged"):
        classical.decode(b"not an image at all")
