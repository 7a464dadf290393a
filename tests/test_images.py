import io

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
