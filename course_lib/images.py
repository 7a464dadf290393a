"""Images as arrays: loading, saving, conversions, colour spaces, padding, sample images.

Conventions used throughout the course:

* an *array image* is a ``numpy.ndarray`` of dtype ``uint8`` and shape ``(H, W, 3)`` (RGB) or
  ``(H, W)`` (greyscale), exactly what a PNG stores;
* a *tensor image* is a ``torch.Tensor`` of dtype ``float32`` and shape ``(N, C, H, W)`` with
  values in ``[0, 1]``, what the networks take.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

# ITU-R BT.601 full-range coefficients, as used by JFIF (JPEG) and Pillow's "YCbCr" mode.
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ]
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
_CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])


class ImageError(ValueError):
    """Raised for an image that cannot be read or used; the message says what to do."""


def load_image(source: str | os.PathLike | bytes, mode: str = "RGB") -> np.ndarray:
    """Read an image file (or its bytes) into a ``uint8`` array.

    ``mode="RGB"`` gives ``(H, W, 3)``; ``mode="L"`` gives ``(H, W)`` greyscale. Greyscale,
    palette and RGBA files are converted (alpha is dropped onto black, as most viewers show it
    without a background). A missing, empty or broken file raises :class:`ImageError`.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', not {mode!r}")
    if isinstance(source, bytes | bytearray):
        name, stream = "<bytes>", io.BytesIO(source)
    else:
        name = str(source)
        if not Path(name).is_file():
            raise ImageError(f"No image file at {name!r}: check the path.")
        stream = name
    try:
        with Image.open(stream) as img:
            img.load()
            return np.array(img.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(
            f"Could not decode {name!r} as an image ({err}). The file is damaged or not an "
            "image: re-download it or pick another file."
        ) from None


def save_image(image: np.ndarray | torch.Tensor, path: str | os.PathLike) -> Path:
    """Save an array or tensor image losslessly (PNG is chosen by the file extension)."""
    array = to_uint8(image)
    path = Path(path)
    Image.fromarray(array).save(path)
    return path


def to_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Any course image (uint8 array, float array in [0, 1], or tensor) -> uint8 ``(H, W[, 3])``.

    Floats are scaled by 255, rounded and clipped, which is what writing a file does.
    """
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.ndim == 4:
            if tensor.shape[0] != 1:
                raise ValueError(f"expected one image, got a batch of {tensor.shape[0]}")
            tensor = tensor[0]
        if tensor.ndim == 3:
            tensor = tensor.permute(1, 2, 0)
            if tensor.shape[-1] == 1:
                tensor = tensor[..., 0]
        image = tensor.numpy()
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array
    return np.clip(np.round(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` or ``(H, W)`` array -> float tensor ``(1, C, H, W)`` in [0, 1]."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {array.shape}")
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / scale)
    return tensor.permute(2, 0, 1).unsqueeze(0).contiguous()


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB -> YCbCr (BT.601 full range, the JPEG convention), float64 in [0, 255]."""
    return np.asarray(rgb, dtype=np.float64) @ _RGB_TO_YCBCR.T + _CHROMA_OFFSET


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`; float64, not rounded or clipped."""
    return (np.asarray(ycbcr, dtype=np.float64) - _CHROMA_OFFSET) @ _YCBCR_TO_RGB.T


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "replicate"):
    """Pad ``(N, C, H, W)`` on the bottom/right so H and W are multiples of ``multiple``.

    Returns ``(padded, (pad_h, pad_w))``; :func:`crop` undoes it.
    """
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (pad_h, pad_w)


def crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Keep the top-left ``height x width`` of a ``(..., H, W)`` tensor."""
    return x[..., :height, :width]


SAMPLE_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "cat")


def sample_image(name: str = "astronaut") -> np.ndarray:
    """A photo bundled with scikit-image (no network), as uint8 RGB."""
    from skimage import data

    if name not in SAMPLE_IMAGES:
        raise ValueError(f"unknown sample image {name!r}; choose one of {SAMPLE_IMAGES}")
    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def center_crop(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """The central ``height x width`` window of an array image."""
    width = height if width is None else width
    top = (image.shape[0] - height) // 2
    left = (image.shape[1] - width) // 2
    if top < 0 or left < 0:
        raise ValueError(f"image {image.shape[:2]} is smaller than the crop {(height, width)}")
    return image[top : top + height, left : left + width]
