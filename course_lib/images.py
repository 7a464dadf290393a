"""Images as arrays: loading, saving, conversions, colour spaces, padding, sample images.

Conventions used throughout the course:

* an *array image* is a ``numpy.ndarray`` of dtype ``uint8`` and shape ``(H, W, 3)`` (RGB) or
  ``(H, W)`` (greyscale), exactly what a PNG stores;
* a *tensor image* is a ``torch.Tensor`` of dtype ``float32`` and shape ``(N, C, H, W)`` with
  values in ``[0, 1]``, what the networks take.

Size limit: :func:`load_image` and every decoder of the course (mini-JPEG, the learned codec,
latent files) refuse an image of more than :data:`MAX_PIXELS` pixels before allocating
anything for it, since a small file that claims a huge image is the classic "decompression
bomb". Raise the limit per call with ``max_pixels=`` or for a session with the environment
variable ``COURSE_MAX_PIXELS`` (:func:`check_pixel_count`).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

# ITU-R BT.601 full-range coefficients, as used by JFIF (JPEG) and Pillow's "YCbCr" mode.
RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ]
)
_YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)
_CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])


class ImageError(ValueError):
    """Raised for an image that cannot be read or used; the message says what to do."""


MAX_PIXELS = 89_478_485
"""Largest image (height x width) the course reads or decodes: Pillow's own default
(``PIL.Image.MAX_IMAGE_PIXELS``), about 9459 x 9459 pixels."""
PIXEL_LIMIT_VARIABLE = "COURSE_MAX_PIXELS"


def pixel_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else ``$COURSE_MAX_PIXELS`` if set,
    else :data:`MAX_PIXELS`."""
    if max_pixels is not None:
        return max_pixels
    setting = os.environ.get(PIXEL_LIMIT_VARIABLE, "")
    try:
        return int(setting) if setting else MAX_PIXELS
    except ValueError:
        raise ValueError(f"{PIXEL_LIMIT_VARIABLE}={setting!r} is not a whole number of "
                         "pixels") from None


def check_pixel_count(height: int, width: int, max_pixels: int | None = None,
                      error: type[Exception] = ImageError, what: str = "the image") -> None:
    """Raise ``error`` if ``height x width`` exceeds :func:`pixel_limit`. Decoders pass their
    own error type (``DecodeError``, ``CodecFileError``): each format has one documented
    error."""
    limit = pixel_limit(max_pixels)
    if height * width > limit:
        raise error(f"{what} is {height}x{width} = {height * width:,} pixels, over the limit of "
                    f"{limit:,} that guards against decompression bombs; if you trust the "
                    f"file, pass max_pixels= or set {PIXEL_LIMIT_VARIABLE}")


BACKGROUND = 255
"""Grey level under transparent pixels: :func:`load_image` composites onto white, as a page
or a browser shows a transparent image."""


def load_image(source: str | os.PathLike | bytes, mode: str = "RGB", *,
               max_pixels: int | None = None) -> np.ndarray:
    """Read an image file (or its bytes) into a ``uint8`` array.

    ``mode="RGB"`` gives ``(H, W, 3)``; ``mode="L"`` gives ``(H, W)`` greyscale. Greyscale and
    palette files are converted silently; these are converted with a warning (``UserWarning``)
    that says what was done:

    * transparency: composited onto white (:data:`BACKGROUND`);
    * several frames (an animated GIF, PNG or WebP, a multi-page TIFF): the first frame;
    * 16-bit samples: divided by 257 and rounded (0..65535 -> 0..255);
    * 32-bit float samples: taken to lie in [0, 1], the course's convention for float images
      (:func:`to_uint8`), scaled by 255 and rounded; values outside are clipped.

    A missing, empty or broken file, or one of more than :data:`MAX_PIXELS` pixels (see
    :func:`check_pixel_count` for ``max_pixels``), raises :class:`ImageError`.
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
        with warnings.catch_warnings():
            # Pillow warns from its own limit on; the course's limit, checked next, decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(stream)
        with img:
            check_pixel_count(img.height, img.width, max_pixels, what=repr(name))
            if getattr(img, "n_frames", 1) > 1:
                warnings.warn(f"{name!r} has {img.n_frames} frames; using the first",
                              stacklevel=2)
            img.load()
            return _eight_bit(img, mode, name)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name!r} is too large: {err} The course's limit is "
                         f"{pixel_limit(max_pixels):,} pixels; if you trust the file, pass "
                         f"max_pixels= or set {PIXEL_LIMIT_VARIABLE}, and raise Pillow's own "
                         "limit, PIL.Image.MAX_IMAGE_PIXELS, too") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as err:
        # pillow-jxl-plugin raises RuntimeError for a broken JPEG XL file, with advice for
        # libjxl's developers in place of a reason.
        reason = "broken JPEG XL data" if isinstance(err, RuntimeError) else err
        raise ImageError(
            f"Could not decode {name!r} as an image ({reason}). The file is damaged or not an "
            "image: re-download it or pick another file."
        ) from None


def _eight_bit(img: Image.Image, mode: str, name: str) -> np.ndarray:
    """A loaded Pillow image as a uint8 array in ``mode``, with the warnings of
    :func:`load_image`."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _scaled_to_eight_bits(np.asarray(img), mode, name)
    if img.has_transparency_data:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:] / 255
        if np.any(alpha < 1):
            warnings.warn(f"{name!r} has transparent pixels; composited onto white",
                          stacklevel=3)
        rgb = np.round(rgba[..., :3] * alpha + BACKGROUND * (1 - alpha)).astype(np.uint8)
        img = Image.fromarray(rgb)
    return np.array(img.convert(mode))


def _scaled_to_eight_bits(values: np.ndarray, mode: str, name: str) -> np.ndarray:
    """16-bit or float greyscale samples -> uint8 ``(H, W)`` or ``(H, W, 3)``."""
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise ImageError(f"{name!r} holds NaN or infinite values: fix the file first")
        outside = "" if values.min() >= 0 and values.max() <= 1 else (
            f" (values from {values.min():g} to {values.max():g}; those outside are clipped)")
        warnings.warn(f"{name!r} holds 32-bit floats; taken to lie in [0, 1] and scaled to "
                      f"8 bits{outside}", stacklevel=4)
        grey = to_uint8(values)
    else:
        if values.min() < 0 or values.max() > 65535:
            raise ImageError(f"{name!r} holds 32-bit integers outside 0..65535: convert it to "
                             "8 or 16 bits first")
        warnings.warn(f"{name!r} has 16-bit samples; scaled to 8 bits (divided by 257)",
                      stacklevel=4)
        grey = np.round(values / 257).astype(np.uint8)
    return grey if mode == "L" else np.repeat(grey[..., None], 3, axis=-1)


def save_image(image: np.ndarray | torch.Tensor, path: str | os.PathLike) -> Path:
    """Save an array or tensor image losslessly (PNG is chosen by the file extension)."""
    path = Path(path)
    path.write_bytes(image_file_bytes(image, path.suffix))
    return path


def image_file_bytes(image: np.ndarray | torch.Tensor, extension: str) -> bytes:
    """The bytes of an image file in the format of ``extension`` (".png", ".jpg", ...)."""
    file_format = Image.registered_extensions().get(extension.lower())
    if file_format is None:
        raise ImageError(f"no image format has the extension {extension!r}; use .png")
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format=file_format)
    return buffer.getvalue()


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
    return np.asarray(rgb, dtype=np.float64) @ RGB_TO_YCBCR.T + _CHROMA_OFFSET


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
