import io
import subprocess
import sys

import numpy as np
import pillow_jxl  # noqa: F401  (registers JPEG XL with Pillow for the referee encodes)
import pytest
from PIL import Image, JpegImagePlugin
from skimage.metrics import peak_signal_noise_ratio

from course_lib.codecs import classical
from course_lib.images import ImageError, center_crop


@pytest.fixture(scope="module")
def crop(kodak_image):
    return np.ascontiguousarray(center_crop(kodak_image, 192, 256))


@pytest.mark.parametrize("codec", ["jpeg", "jpeg444", "webp", "avif", "jxl", "jpeg2000"])
def test_lossy_codecs_round_trip_and_measure(crop, codec):
    spec = classical.get_codec(codec)
    result = classical.evaluate(crop, codec, spec.settings[5])
    # the measurement is of the file the wrapper writes (the same bytes again: the encoders
    # are deterministic) and of what it decodes to
    data = classical.encode(crop, codec, spec.settings[5])
    assert result.num_bytes == len(data) and result.bpp == 8 * len(data) / (192 * 256)
    np.testing.assert_array_equal(result.reconstruction, classical.decode(data))
    assert result.psnr == pytest.approx(
        peak_signal_noise_ratio(crop, result.reconstruction, data_range=255), abs=1e-4)
    assert 22 < result.psnr < 50
    assert 0.8 < result.ms_ssim <= 1.0
    assert result.encode_s > 0 and result.decode_s > 0


@pytest.mark.parametrize("codec", ["png", "webp_lossless", "jxl_lossless"])
def test_lossless_codecs_are_exact(crop, codec):
    result = classical.evaluate(crop, codec)
    np.testing.assert_array_equal(result.reconstruction, crop)
    assert result.psnr == float("inf")
    assert 4 < result.bpp < 24


@pytest.mark.parametrize("codec, setting, pillow_format, options", [
    ("jpeg", 50, "JPEG", {"quality": 50, "optimize": True, "subsampling": 2}),
    ("jxl", 50, "JXL", {"quality": 50, "effort": 7}),
    ("jxl_lossless", None, "JXL", {"lossless": True, "effort": 7}),
])
def test_wrapper_is_pillow_with_the_convention_settings(crop, codec, setting, pillow_format,
                                                        options):
    ours = classical.encode(crop, codec, setting)
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format=pillow_format, **options)
    assert ours == buffer.getvalue()
    decoded = np.array(Image.open(io.BytesIO(ours)).convert("RGB"))
    np.testing.assert_array_equal(classical.decode(ours), decoded)


def test_jxl_round_trip_psnr_rises_with_quality(crop):
    odd = np.ascontiguousarray(crop[:37, :53])  # not a multiple of JPEG XL's 8x8 blocks
    data = classical.encode(odd, "jxl", 50)
    assert data.startswith(b"\xff\x0a")  # a real JPEG XL codestream
    assert classical.decode(data).shape == odd.shape
    results = classical.rd_curve(crop, "jxl", [10, 50, 90])
    rates, psnrs = [r.bpp for r in results], [r.psnr for r in results]
    assert rates == sorted(rates) and psnrs == sorted(psnrs)
    assert psnrs[2] - psnrs[0] > 5, psnrs


def test_decode_registers_jpeg_xl_itself(crop, tmp_path):
    # A fresh interpreter where nothing has imported the plugin yet: decode must, for both
    # forms of a JPEG XL file (bare codestream and ISO BMFF container).
    files = []
    for container in (False, True):
        buffer = io.BytesIO()
        Image.fromarray(crop).save(buffer, format="JXL", quality=90, use_container=container)
        files.append(tmp_path / f"container_{container}.jxl")
        files[-1].write_bytes(buffer.getvalue())
    script = ("import sys\n"
              "from course_lib.codecs import classical\n"
              "assert 'pillow_jxl' not in sys.modules\n"
              "for name in sys.argv[1:]:\n"
              "    with open(name, 'rb') as file:\n"
              "        print(classical.decode(file.read()).shape)\n")
    run = subprocess.run([sys.executable, "-c", script, *map(str, files)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == [str(crop.shape)] * 2


def test_jxl_damaged_bytes_give_a_clear_error(crop):
    data = classical.encode(crop, "jxl", 50)
    with pytest.raises(ImageError, match="broken JPEG XL data.*damaged"):
        classical.decode(data[: len(data) // 3] + b"garbage")


def test_without_the_jxl_plugin_only_jxl_fails_and_says_what_to_install(crop, monkeypatch):
    data = classical.encode(crop, "jxl", 50)
    monkeypatch.setitem(sys.modules, "pillow_jxl", None)  # as if not installed
    for codec, setting in [("jxl", 50), ("jxl_lossless", None)]:
        with pytest.raises(ImportError, match="pip install pillow-jxl-plugin"):
            classical.encode(crop, codec, setting)
    with pytest.raises(ImportError, match="pip install pillow-jxl-plugin"):
        classical.decode(data)
    assert classical.evaluate(crop, "jpeg", 50).reconstruction.shape == crop.shape


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
