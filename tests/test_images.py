import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib import images


def test_ycbcr_matches_pillow(kodak_image):
    ours = images.rgb_to_ycbcr(kodak_image)
    pillow = np.asarray(Image.fromarray(kodak_image).convert("YCbCr"), dtype=np.float64)
    # Pillow works in fixed point and truncates to integers: ours - pillow lies in [0, 1),
    # give or take its fixed-point error (a few hundredths).
    difference = ours - pillow
    assert -0.05 < difference.min() and difference.max() <= 1.0
    assert abs(difference.mean() - 0.5) < 0.1


def test_ycbcr_round_trip_is_exact_before_rounding(kodak_image):
    back = images.ycbcr_to_rgb(images.rgb_to_ycbcr(kodak_image))
    np.testing.assert_allclose(back, kodak_image, atol=1e-9)


def test_tensor_conversions_round_trip(kodak_image):
    tensor = images.to_tensor(kodak_image)
    assert tensor.shape == (1, 3, 512, 768) and tensor.dtype == torch.float32
    np.testing.assert_array_equal(images.to_uint8(tensor), kodak_image)
    grey = images.to_tensor(kodak_image[..., 0])
    assert grey.shape == (1, 1, 512, 768)
    np.testing.assert_array_equal(images.to_uint8(grey), kodak_image[..., 0])


def test_to_uint8_rounds_and_clips():
    values = np.array([[-0.2, 0.0, 0.5 / 255, 1.4 / 255, 1.0, 1.7]])
    assert images.to_uint8(values).tolist() == [[0, 0, 0, 1, 255, 255]]


def test_pad_and_crop(kodak_image):
    x = images.to_tensor(kodak_image)[..., :101, :77]
    padded, (pad_h, pad_w) = images.pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (112, 80) and (pad_h, pad_w) == (11, 3)
    assert torch.equal(images.crop(padded, 101, 77), x)


def test_load_image_converts_modes_and_rejects_broken_files(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    with pytest.warns(UserWarning, match="transparent"):
        assert images.load_image(buffer.getvalue()).shape == (4, 5, 3)
        assert images.load_image(buffer.getvalue(), mode="L").shape == (4, 5)
    broken = tmp_path / "broken.png"
    broken.write_bytes(buffer.getvalue()[:30])
    with pytest.raises(images.ImageError, match="damaged"):
        images.load_image(broken)
    with pytest.raises(images.ImageError, match="No image file"):
        images.load_image(tmp_path / "missing.png")


def test_sample_images_are_bundled_rgb():
    for name in ["astronaut", "camera"]:
        image = images.sample_image(name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    with pytest.raises(ValueError, match="unknown sample"):
        images.sample_image("lena")


# ---------------------------------------------------------------------------------------------
# Odd images in: each converted with a warning that says what was done, or refused clearly


def _file_bytes(image: Image.Image, file_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


def test_transparency_is_composited_onto_white_with_a_warning():
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., :3] = [200, 40, 0]  # the colour under the alpha must not show through as is
    rgba[0, :, 3] = [0, 128, 255]
    rgba[1, :, 3] = 255
    data = _file_bytes(Image.fromarray(rgba, mode="RGBA"), "PNG")
    with pytest.warns(UserWarning, match="transparent.*white"):
        rgb = images.load_image(data)
    alpha = rgba[..., 3:] / 255
    expected = np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    np.testing.assert_array_equal(rgb, expected)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    with pytest.warns(UserWarning, match="transparent"):
        grey = images.load_image(data, mode="L")
    np.testing.assert_array_equal(grey, np.array(Image.fromarray(expected).convert("L")))


def test_opaque_alpha_and_plain_files_load_without_warnings():
    rgba = np.full((2, 2, 4), 255, dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert images.load_image(_file_bytes(Image.fromarray(rgba), "PNG")).shape == (2, 2, 3)
        grey = _file_bytes(Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3)), "PNG")
        np.testing.assert_array_equal(images.load_image(grey, mode="L"),
                                      np.arange(6).reshape(2, 3))


def test_animated_gif_gives_its_first_frame_with_a_warning():
    frames = [Image.fromarray(np.full((4, 4, 3), value, np.uint8)) for value in (0, 120, 250)]
    data = _file_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="3 frames.*first"):
        image = images.load_image(data)
    np.testing.assert_array_equal(image, np.zeros((4, 4, 3), np.uint8))


def test_16_bit_grey_is_scaled_not_clipped():
    values = np.array([[0, 1, 128, 129, 385], [32768, 65278, 65279, 65534, 65535]], np.uint16)
    data = _file_bytes(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    with pytest.warns(UserWarning, match="16-bit.*257"):
        grey = images.load_image(data, mode="L")
    assert grey.tolist() == [[0, 0, 0, 1, 1], [128, 254, 254, 255, 255]]
    with pytest.warns(UserWarning, match="16-bit"):
        rgb = images.load_image(data)
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=-1))


def test_float_tiff_is_taken_as_zero_to_one_with_a_warning():
    values = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)
    data = _file_bytes(Image.fromarray(values), "TIFF")
    with pytest.warns(UserWarning, match=r"floats.*\[0, 1\]") as caught:
        grey = images.load_image(data, mode="L")
    assert grey.tolist() == [[0, 64, 128, 255]]
    assert "clipped" not in str(caught[0].message)
    brighter = _file_bytes(Image.fromarray(values * 2 - 0.5), "TIFF")
    with pytest.warns(UserWarning, match="from -0.5 to 1.5.*clipped"):
        assert images.load_image(brighter, mode="L").tolist() == [[0, 0, 128, 255]]
    broken = _file_bytes(Image.fromarray(np.array([[np.nan]], np.float32)), "TIFF")
    with pytest.raises(images.ImageError, match="NaN"):
        images.load_image(broken)


def test_save_image_refuses_an_unknown_extension(tmp_path):
    with pytest.raises(images.ImageError, match="extension.*png"):
        images.save_image(np.zeros((2, 2), np.uint8), tmp_path / "picture.xyz")
