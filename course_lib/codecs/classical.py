"""Classical image codecs through Pillow, set up as ``shared/BENCHMARK_CONVENTIONS.md`` asks.

``encode(image, codec, setting) -> bytes`` and ``decode(bytes) -> image`` work on uint8 RGB
arrays ``(H, W, 3)``; :func:`evaluate` measures one encode/decode (bytes, bpp, PSNR, MS-SSIM,
times) and :func:`at_target_bpp` searches the setting that lands closest to a rate.

The *setting* is the codec's own knob: the quality 1..100 for JPEG, WebP, AVIF and JPEG XL;
for JPEG 2000 (OpenJPEG, rate-controlled) the target compression ratio, e.g. 24 for 1 bpp;
ignored by the lossless codecs.

JPEG XL comes from the ``pillow-jxl-plugin`` package, which registers the format with Pillow
when it is imported; it is imported on first use, so without it only the JPEG XL codecs fail.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .. import metrics
from ..images import ImageError, load_image, to_tensor


@dataclass(frozen=True)
class Codec:
    name: str
    label: str
    format: str
    lossless: bool
    setting_name: str
    settings: tuple  # the default sweep, lowest rate first

    def options(self, setting) -> dict:
        if self.name == "jpeg":
            return {"quality": int(setting), "subsampling": 2, "optimize": True}
        if self.name == "jpeg444":
            return {"quality": int(setting), "subsampling": 0, "optimize": True}
        if self.name == "webp":
            return {"quality": int(setting), "method": 6}
        if self.name == "avif":
            return {"quality": int(setting), "speed": 4, "subsampling": "4:2:0"}
        if self.name == "jxl":
            return {"quality": int(setting), "effort": 7}
        if self.name == "jpeg2000":
            return {"irreversible": True, "quality_mode": "rates",
                    "quality_layers": [float(setting)]}
        if self.name == "png":
            return {"optimize": True}
        if self.name == "webp_lossless":
            return {"lossless": True, "quality": 100, "method": 6}
        if self.name == "jxl_lossless":
            return {"lossless": True, "effort": 7}
        raise AssertionError(self.name)


_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
CODECS = {
    codec.name: codec
    for codec in (
        Codec("jpeg", "JPEG 4:2:0", "JPEG", False, "quality", _QUALITIES),
        Codec("jpeg444", "JPEG 4:4:4", "JPEG", False, "quality", _QUALITIES),
        Codec("webp", "WebP", "WEBP", False, "quality", _QUALITIES),
        Codec("avif", "AVIF", "AVIF", False, "quality", _QUALITIES),
        Codec("jxl", "JPEG XL", "JXL", False, "quality", _QUALITIES),
        Codec("jpeg2000", "JPEG 2000", "JPEG2000", False, "compression ratio",
              (240, 160, 120, 80, 60, 48, 32, 24, 16, 12, 8)),
        Codec("png", "PNG", "PNG", True, "none", (None,)),
        Codec("webp_lossless", "WebP lossless", "WEBP", True, "none", (None,)),
        Codec("jxl_lossless", "JPEG XL lossless", "JXL", True, "none", (None,)),
    )
}


def get_codec(name: str) -> Codec:
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; choose one of {sorted(CODECS)}")
    return CODECS[name]


# The two ways a JPEG XL file starts: a bare codestream, or the ISO BMFF container's first box.
_JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")


def register_jpeg_xl() -> None:
    """Teach Pillow JPEG XL (the pillow-jxl-plugin package), or raise an ImportError that says
    how to install it."""
    try:
        import pillow_jxl  # noqa: F401  (importing it registers the "JXL" format with Pillow)
    except ImportError as error:
        raise ImportError("JPEG XL needs the pillow-jxl-plugin package, which teaches Pillow "
                          "the format: pip install pillow-jxl-plugin") from error


def check_rgb_image(image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(
            f"expected a uint8 RGB image of shape (H, W, 3), got dtype {array.dtype} and shape "
            f"{array.shape}; load files with course_lib.images.load_image or convert with "
            "course_lib.images.to_uint8")
    return array


def encode(image: np.ndarray, codec: str, setting=None) -> bytes:
    """Compress a uint8 RGB image to the bytes of a real file."""
    spec = get_codec(codec)
    array = check_rgb_image(image)
    if setting is None and not spec.lossless:
        raise ValueError(f"{spec.label} needs a {spec.setting_name}, e.g. {spec.settings[5]}")
    if spec.setting_name == "quality" and not 0 <= setting <= 100:
        raise ValueError(f"{spec.label} quality must be in 0..100, got {setting}")
    if spec.setting_name == "compression ratio" and not setting >= 1:
        raise ValueError(f"JPEG 2000 compression ratio must be >= 1, got {setting}")
    if spec.format == "JXL":
        register_jpeg_xl()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=spec.format, **spec.options(setting))
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Decode the bytes of any of these formats back to a uint8 RGB array."""
    data = bytes(data)
    if data.startswith(_JXL_SIGNATURES):
        register_jpeg_xl()
    return load_image(data)


@dataclass
class CodecResult:
    """One encode/decode of one image, measured."""

    codec: str
    setting: float | None
    num_bytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    reconstruction: np.ndarray = field(repr=False, compare=False)


def evaluate(image: np.ndarray, codec: str, setting=None) -> CodecResult:
    """Encode, decode and measure: real bytes, bpp, PSNR (8-bit RGB), MS-SSIM, wall times."""
    array = check_rgb_image(image)
    start = time.perf_counter()
    data = encode(array, codec, setting)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode(data)
    decode_s = time.perf_counter() - start
    original, reconstruction = to_tensor(array), to_tensor(decoded)
    with torch.no_grad():
        psnr = metrics.psnr(original, reconstruction).item()
        try:
            ms_ssim = metrics.ms_ssim(original, reconstruction).item()
        except ValueError:  # image too small for five scales
            ms_ssim = float("nan")
    height, width = array.shape[:2]
    return CodecResult(codec, setting, len(data), metrics.bpp(len(data), height, width), psnr,
                       ms_ssim, encode_s, decode_s, decoded)


def rd_curve(image: np.ndarray, codec: str, settings=None) -> list[CodecResult]:
    """:func:`evaluate` at each setting (the codec's default sweep if none given)."""
    settings = get_codec(codec).settings if settings is None else settings
    return [evaluate(image, codec, setting) for setting in settings]


def at_target_bpp(image: np.ndarray, codec: str, target_bpp: float) -> CodecResult:
    """The result whose rate is closest to ``target_bpp`` without exceeding it.

    Quality codecs: bisection over the integer qualities 1..100 (file size grows with quality
    for these encoders). JPEG 2000: its rate control is asked directly, then tightened a few
    times if headers push the file over the target. If even the lowest
    setting exceeds the target, that lowest-rate result is returned.
    """
    spec = get_codec(codec)
    if spec.lossless:
        raise ValueError(f"{spec.label} is lossless: its rate cannot be chosen")
    if target_bpp <= 0:
        raise ValueError(f"target bpp must be positive, got {target_bpp}")
    array = check_rgb_image(image)
    if spec.setting_name == "compression ratio":
        # The rate control lands within a few bytes (headers); tighten until under the target.
        ratio = max(1.0, 24.0 / target_bpp)
        for _ in range(5):
            result = evaluate(array, codec, ratio)
            if result.bpp <= target_bpp:
                break
            ratio *= result.bpp / target_bpp * 1.002
        return result
    low, high = 1, 100
    best = evaluate(array, codec, low)
    if best.bpp > target_bpp:
        return best
    while high - low > 1:
        middle = (low + high) // 2
        result = evaluate(array, codec, middle)
        if result.bpp <= target_bpp:
            low, best = middle, result
        else:
            high = middle
    top = evaluate(array, codec, high)
    return top if top.bpp <= target_bpp else best
