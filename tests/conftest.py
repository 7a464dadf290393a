"""Shared fixtures. Dataset tests need the Kodak images: from the internet, or from the offline
mirror named by COURSE_DATA_MIRROR (CI sets it)."""

import io

import numpy as np
import pytest
from PIL import Image

from course_lib import datasets


@pytest.fixture(scope="session")
def kodak_image():
    """Kodak image 1 (512x768 RGB uint8), fetched and checksum-verified."""
    return datasets.load_kodak(1)


@pytest.fixture(scope="session")
def kodak_jpeg_pair(kodak_image):
    """(original, JPEG q=30 decoded) as uint8 arrays: a realistic distorted pair."""
    buffer = io.BytesIO()
    Image.fromarray(kodak_image).save(buffer, format="JPEG", quality=30)
    decoded = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return kodak_image, decoded
