"""Notebook 03's latent files: an autoencoder's latent stored naively, no entropy model.

A latent is rounded to ``bits`` bits per value (per-channel min-max scaling,
:func:`quantize_latents`) and stored as raw bits, as a PNG of the latent planes, or
zlib-deflated (:func:`pack_latents`); :func:`compress_image` / :func:`decompress_image` do the
whole round trip with a model of :mod:`course_lib.autoencoders`. A latent file that cannot be
decoded raises :class:`~course_lib.entropy.DecodeError`, checked before anything is allocated:
sizes against the bytes present and the pixel limit of :mod:`course_lib.images`
(:func:`unpack_latents`).
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..autoencoders import Autoencoder, evaluation_mode
from ..entropy.errors import DecodeError
from ..images import check_pixel_count


@dataclass
class QuantizedLatents:
    """A latent rounded to ``bits`` bits per value, channel by channel.

    ``symbols``: uint8 ``(C, h, w)`` in ``0 .. 2**bits - 1``; value ``s`` of channel ``c``
    stands for ``low[c] + s * (high[c] - low[c]) / (2**bits - 1)``. ``low``, ``high``: float32
    ``(C,)``. ``image_size``: ``(H, W)`` of the image, to crop the decoded picture.
    """

    symbols: np.ndarray
    low: np.ndarray
    high: np.ndarray
    bits: int
    image_size: tuple[int, int]


def _check_bits(bits: int) -> int:
    if not 1 <= int(bits) <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    return int(bits)


def quantize_latents(y: torch.Tensor, bits: int = 8, image_size=None) -> QuantizedLatents:
    """Round a latent ``(C, h, w)`` to ``2**bits`` evenly spaced levels per channel.

    Each channel's range ``[min, max]`` is mapped onto ``0 .. 2**bits - 1`` and rounded; the
    float32 ``min`` and ``max`` are kept as side information (the decoder needs them).
    ``image_size`` defaults to the latent's own size.
    """
    bits = _check_bits(bits)
    if y.ndim != 3:
        raise ValueError(f"expected one latent (C, h, w), got shape {tuple(y.shape)}")
    values = y.detach().cpu().double()
    # The decoder only sees float32 bounds, so the encoder must scale with the same numbers.
    low = values.amin(dim=(1, 2)).float().double()
    high = values.amax(dim=(1, 2)).float().double()
    levels = 2**bits - 1
    scale = torch.where(high > low, levels / (high - low), torch.zeros_like(high))
    symbols = torch.round((values - low[:, None, None]) * scale[:, None, None]).clamp(0, levels)
    size = tuple(int(s) for s in (image_size if image_size is not None else y.shape[-2:]))
    return QuantizedLatents(symbols.to(torch.uint8).numpy(), low.float().numpy(),
                            high.float().numpy(), bits, size)


def dequantize_latents(quantized: QuantizedLatents) -> torch.Tensor:
    """Symbols back to latent values: float32 ``(1, C, h, w)``."""
    symbols = torch.from_numpy(quantized.symbols.astype(np.float32))
    low = torch.from_numpy(quantized.low)[:, None, None]
    high = torch.from_numpy(quantized.high)[:, None, None]
    return (low + symbols * (high - low) / (2**quantized.bits - 1)).unsqueeze(0)


STORAGE_METHODS = ("raw", "png", "zlib")
# method code, bits, channels, latent height and width, image height and width
_HEADER = struct.Struct("<BBHHHHH")
DEFLATE_MAX_RATIO = 1032  # deflate (zlib, PNG) expands its input at most this many times
_PNG_END = b"\0\0\0\0IEND\xaeB`\x82"  # the last chunk of every PNG file


def pack_latents(quantized: QuantizedLatents, method: str = "zlib") -> bytes:
    """Store quantised latents as bytes, with no entropy model.

    * ``"raw"``: every symbol in ``bits`` bits, packed end to end;
    * ``"png"``: the channels tiled side by side into one greyscale PNG (``optimize=True``);
    * ``"zlib"``: one byte per symbol, then zlib (deflate) at level 9.

    A 12-byte header and the float32 ranges (8 bytes per channel) come first; they count in
    the size like everything else.
    """
    if method not in STORAGE_METHODS:
        raise ValueError(f"method must be one of {STORAGE_METHODS}, not {method!r}")
    symbols = np.ascontiguousarray(quantized.symbols, dtype=np.uint8)
    channels, rows, cols = symbols.shape
    if not all(1 <= size <= 65535 for size in (channels, rows, cols, *quantized.image_size)):
        raise ValueError(f"a latent file stores sizes in 1..65535, got a {channels}x{rows}x{cols}"
                         f" latent of a {quantized.image_size} image")
    header = _HEADER.pack(STORAGE_METHODS.index(method), quantized.bits, channels, rows, cols,
                          *quantized.image_size)
    ranges = np.stack([quantized.low, quantized.high]).astype("<f4").tobytes()
    if method == "raw":
        bit_planes = np.unpackbits(symbols.reshape(-1, 1), axis=1)[:, 8 - quantized.bits:]
        payload = np.packbits(bit_planes).tobytes()
    elif method == "png":
        buffer = io.BytesIO()
        Image.fromarray(_mosaic(symbols)).save(buffer, format="PNG", optimize=True)
        payload = buffer.getvalue()
    else:
        payload = zlib.compress(symbols.tobytes(), 9)
    return header + ranges + payload


def unpack_latents(data: bytes, *, max_pixels: int | None = None) -> QuantizedLatents:
    """Inverse of :func:`pack_latents` (the method is read from the header).

    Raises :class:`~course_lib.entropy.DecodeError` (a ``ValueError``), saying what is wrong,
    for bytes that are not a complete latent file. Everything is checked before it is
    allocated or inflated: a known method, 1..8 bits, no size 0, an image of at most
    :data:`~course_lib.images.MAX_PIXELS` pixels (``max_pixels=`` or ``$COURSE_MAX_PIXELS``
    raise it), finite ranges with ``low <= high``, then a payload that holds exactly the
    ``C x h x w`` symbols of the header, each below ``2**bits``. A raw payload has exactly
    their bytes. A zlib or PNG payload of B bytes holds at most ``1032 B`` symbols (deflate's
    largest expansion; more is refused unread), zlib data is inflated no further than the
    header's count and must end there, and a PNG must be the 8-bit grey mosaic of the header's
    size (read from its first chunk before it is decoded) and end in its IEND chunk. So a
    file of B bytes decodes at most about ``1032 B`` symbols. The format has no checksum:
    damage that keeps it consistent decodes to other pixels.
    """
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise DecodeError(f"{len(data)} bytes are too few for a latent file (header alone is "
                          f"{_HEADER.size})")
    method_code, bits, channels, rows, cols, height, width = _HEADER.unpack_from(data)
    if method_code >= len(STORAGE_METHODS) or not 1 <= bits <= 8:
        raise DecodeError("not a latent file written by pack_latents (bad header)")
    if 0 in (channels, rows, cols, height, width):
        raise DecodeError(f"damaged latent file: its header declares a {channels}x{rows}x{cols} "
                          f"latent of a {height}x{width} image, and no size may be 0")
    check_pixel_count(height, width, max_pixels, DecodeError, "the latent file's image")
    start = _HEADER.size + 8 * channels
    if len(data) < start:
        raise DecodeError(f"damaged latent file: {len(data)} bytes, but the header and the "
                          f"ranges of {channels} channels take {start}")
    ranges = np.frombuffer(data, "<f4", 2 * channels, _HEADER.size).reshape(2, channels)
    if not np.all(np.isfinite(ranges)) or np.any(ranges[0] > ranges[1]):
        raise DecodeError("damaged latent file: a channel's range is not finite or ends below "
                          "its start")
    payload, method = data[start:], STORAGE_METHODS[method_code]
    count = channels * rows * cols
    if method == "raw":
        expected = -(-count * bits // 8)
        if len(payload) != expected:
            raise DecodeError(f"damaged latent file: {len(payload)} bytes of raw symbols, but "
                              f"{count} symbols of {bits} bits take {expected}")
        bit_planes = np.unpackbits(np.frombuffer(payload, np.uint8))[: count * bits]
        padded = np.zeros((count, 8), np.uint8)
        padded[:, 8 - bits:] = bit_planes.reshape(count, bits)
        symbols = np.packbits(padded, axis=1).reshape(channels, rows, cols)
    else:
        if count > DEFLATE_MAX_RATIO * len(payload):
            raise DecodeError(f"damaged latent file: {len(payload)} bytes of {method} data "
                              f"cannot hold the {count} symbols of its header")
        read = _read_png if method == "png" else _inflate
        symbols = read(payload, channels, rows, cols)
        if symbols.max() >> bits:
            raise DecodeError(f"damaged latent file: a symbol does not fit in {bits} bits")
    return QuantizedLatents(symbols.copy(), ranges[0].copy(), ranges[1].copy(), bits,
                            (height, width))


def _inflate(payload: bytes, channels: int, rows: int, cols: int) -> np.ndarray:
    """The zlib payload of :func:`unpack_latents`, inflated to at most the header's count."""
    count = channels * rows * cols
    inflater = zlib.decompressobj()
    try:
        symbols = inflater.decompress(payload, count)
    except zlib.error as err:
        raise DecodeError(f"damaged latent file: its zlib data is corrupt ({err})") from None
    if len(symbols) != count or not inflater.eof or inflater.unused_data:
        raise DecodeError(f"damaged latent file: its zlib data does not hold exactly the {count} "
                          f"symbols ({channels}x{rows}x{cols}) of its header")
    return np.frombuffer(symbols, np.uint8).reshape(channels, rows, cols)


def _read_png(payload: bytes, channels: int, rows: int, cols: int) -> np.ndarray:
    """The PNG payload of :func:`unpack_latents`, its size checked before it is decoded."""
    if not payload.endswith(_PNG_END):  # Pillow decodes a PNG cut short of its last bytes
        raise DecodeError("damaged latent file: its PNG is cut short (no IEND chunk at the end)")
    height, width = _mosaic_shape(channels, rows, cols)
    try:
        with warnings.catch_warnings():
            # the payload's size bounds the mosaic already (deflate's largest expansion)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(payload), formats=["PNG"])
        with image:
            if image.mode != "L" or image.size != (width, height):
                raise DecodeError(f"damaged latent file: its PNG is {image.mode} "
                                  f"{image.height}x{image.width}, but {channels} planes of "
                                  f"{rows}x{cols} make an L (8-bit grey) {height}x{width}")
            image.load()
            return _unmosaic(np.asarray(image), channels, rows, cols)
    except DecodeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error,
            Image.DecompressionBombError) as err:
        raise DecodeError(f"damaged latent file: its PNG cannot be read ({err})") from None


def _mosaic_shape(channels: int, height: int, width: int) -> tuple[int, int]:
    """(rows h, cols w) of the image holding ``channels`` planes of ``height x width``."""
    cols = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / cols)
    return rows * height, cols * width


def _mosaic(symbols: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` -> one ``(rows h, cols w)`` image with the channels side by side."""
    channels, height, width = symbols.shape
    mosaic_height, mosaic_width = _mosaic_shape(channels, height, width)
    rows, cols = mosaic_height // height, mosaic_width // width
    grid = np.zeros((rows * cols, height, width), np.uint8)
    grid[:channels] = symbols
    return grid.reshape(rows, cols, height, width).transpose(0, 2, 1, 3).reshape(
        mosaic_height, mosaic_width)


def _unmosaic(image: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`_mosaic` for an image of :func:`_mosaic_shape`."""
    rows, cols = image.shape[0] // height, image.shape[1] // width
    grid = image.reshape(rows, height, cols, width).transpose(0, 2, 1, 3)
    return grid.reshape(rows * cols, height, width)[:channels]


def image_latents(model: Autoencoder, x: torch.Tensor, bits: int = 8) -> QuantizedLatents:
    """The latent of one image ``x (1, 3, H, W)`` under ``model``, rounded to ``bits`` bits
    per value (:func:`quantize_latents` of :meth:`~course_lib.autoencoders.Autoencoder.
    encode_float64`: the same symbols on every machine)."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image (1, 3, H, W), got shape {tuple(x.shape)}")
    return quantize_latents(model.encode_float64(x)[0], bits, image_size=tuple(x.shape[-2:]))


def compress_image(model: Autoencoder, x: torch.Tensor, bits: int = 8,
                   method: str = "zlib") -> bytes:
    """One image ``(1, 3, H, W)`` -> the bytes of a latent file (see :func:`pack_latents`)."""
    return pack_latents(image_latents(model, x, bits), method)


@torch.no_grad()
def decompress_image(model: Autoencoder, data: bytes, *, max_pixels: int | None = None
                     ) -> torch.Tensor:
    """Bytes from :func:`compress_image` -> image ``(1, 3, H, W)`` in [0, 1].

    Raises :class:`~course_lib.entropy.DecodeError` for bytes :func:`unpack_latents` refuses,
    or whose latent is not the ``(C, ceil(H/f), ceil(W/f))`` that ``model`` makes of the image
    they describe (``max_pixels``: see :func:`unpack_latents`).
    """
    quantized = unpack_latents(data, max_pixels=max_pixels)
    height, width = quantized.image_size
    expected = (model.latent_channels, -(-height // model.factor), -(-width // model.factor))
    if quantized.symbols.shape != expected:
        raise DecodeError("these bytes hold {} latent channels of {}x{} for a {}x{} image; "
                          "this model decodes {} latent channels of {}x{} for that size"
                          .format(*quantized.symbols.shape, height, width, *expected))
    with evaluation_mode(model):
        return model.decode(dequantize_latents(quantized), height, width)
