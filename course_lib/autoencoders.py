"""Autoencoders: a dense one, two convolutional ones, and naive storage of their latents.

Every model maps an image ``x (N, 3, H, W)`` in [0, 1] to a latent ``y (N, C, H/f, W/f)``
with its analysis transform ``g_a`` and back with its synthesis transform ``g_s``; ``f`` is
the model's ``factor`` (H and W must be multiples of it: :meth:`Autoencoder.encode` pads).

* :class:`DenseAutoencoder`: Flatten -> Dense 128 -> 64 -> 32 (ReLU, dropout) and the mirror
  image, applied tile by tile; the design of the articles that call it image compression.
* :class:`ConvPoolAutoencoder`: 3x3 convolutions with max pooling, nearest upsampling.
* :class:`StridedAutoencoder`: 5x5 convolutions with stride 2 and their transposes, the shape
  of the learned codecs of notebooks 06-07 (with ReLU where those use GDN).

``compress`` / ``decompress`` give real bytes: latents rounded to ``bits`` bits per value
(per-channel min-max scaling) and stored as raw bits, as a PNG of the latent planes, or
zlib-deflated. No entropy model, no rate term in training: notebook 03 measures how far that
is from JPEG, notebooks 04-06 close the gap. A latent file that cannot be decoded raises
:class:`~course_lib.entropy.DecodeError`, checked before anything is allocated: sizes against
the bytes present and the pixel limit of :mod:`course_lib.images` (:func:`unpack_latents`).

Trained weights ship in the repository's ``weights/autoencoders`` folder, with training logs
and ``README.md`` (the command that made them); :func:`load_pretrained` checks their sha256
before loading (see :mod:`course_lib.weights`). :func:`pretrained_latents` gives the quantised
latents of a Kodak image, reproducibly, for notebook 04 to entropy-code.
"""

from __future__ import annotations

import argparse
import copy
import io
import math
import os
import struct
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import metrics, weights
from .entropy.errors import DecodeError
from .images import check_pixel_count, crop, pad_to_multiple

# ---------------------------------------------------------------------------------------------
# Models


class Autoencoder(nn.Module):
    """Shared interface: ``g_a`` and ``g_s`` (defined by subclasses), ``factor`` (the latent is
    ``factor`` times smaller than the image in each direction), ``latent_channels``."""

    def __init__(self, latent_channels: int, factor: int):
        super().__init__()
        self.latent_channels = latent_channels
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, 3, H, W)``, H and W multiples of ``factor`` -> ``x_hat`` (training path)."""
        return self.g_s(self.g_a(x))

    @property
    def values_per_pixel(self) -> float:
        """Latent values per image pixel (the input has 3)."""
        return self.latent_channels / self.factor**2

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Any-size image ``(N, 3, H, W)`` -> latent ``(N, C, ceil(H/f), ceil(W/f))``.

        The image is padded by repeating its border up to a multiple of ``factor``.
        """
        _check_images(x)
        return self.g_a(pad_to_multiple(x, self.factor)[0])

    def decode(self, y: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Latent -> image ``(N, 3, height, width)`` clipped to [0, 1]."""
        return crop(self.g_s(y), height, width).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Encode and decode without quantisation, in evaluation mode (dropout off)."""
        with _evaluation_mode(self):
            return self.decode(self.encode(x), *x.shape[-2:])

    @torch.no_grad()
    def encode_float64(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` in float64 (evaluation mode), returning a float64 latent.

        float32 results differ in the last digit between CPUs and thread counts, which could
        round a latent value the other way; in float64 every machine gets the same symbols.
        """
        with _evaluation_mode(self):
            return copy.deepcopy(self).double().encode(x.double())

    def latents(self, x: torch.Tensor, bits: int = 8) -> QuantizedLatents:
        """The latent of one image ``(1, 3, H, W)`` rounded to ``bits`` bits per value
        (:func:`quantize_latents` of :meth:`encode_float64`)."""
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"expected one image (1, 3, H, W), got shape {tuple(x.shape)}")
        return quantize_latents(self.encode_float64(x)[0], bits, image_size=tuple(x.shape[-2:]))

    def compress(self, x: torch.Tensor, bits: int = 8, method: str = "zlib") -> bytes:
        """One image ``(1, 3, H, W)`` -> the bytes of a file (see :func:`pack_latents`)."""
        return pack_latents(self.latents(x, bits), method)

    @torch.no_grad()
    def decompress(self, data: bytes, *, max_pixels: int | None = None) -> torch.Tensor:
        """Bytes from :meth:`compress` -> image ``(1, 3, H, W)`` in [0, 1].

        Raises :class:`~course_lib.entropy.DecodeError` for bytes :func:`unpack_latents`
        refuses, or whose latent is not the ``(C, ceil(H/f), ceil(W/f))`` this model makes of
        the image they describe (``max_pixels``: see :func:`unpack_latents`).
        """
        quantized = unpack_latents(data, max_pixels=max_pixels)
        height, width = quantized.image_size
        expected = (self.latent_channels, -(-height // self.factor), -(-width // self.factor))
        if quantized.symbols.shape != expected:
            raise DecodeError("these bytes hold {} latent channels of {}x{} for a {}x{} image; "
                              "this model decodes {} latent channels of {}x{} for that size"
                              .format(*quantized.symbols.shape, height, width, *expected))
        with _evaluation_mode(self):
            return self.decode(dequantize_latents(quantized), height, width)


class DenseAutoencoder(Autoencoder):
    """Fully connected autoencoder on ``patch_size`` x ``patch_size`` colour tiles.

    Encoder: Flatten -> Linear(3 p², 128) -> ReLU -> Dropout -> Linear(128, 64) -> ReLU ->
    Dropout -> Linear(64, 32); the decoder mirrors it and ends in a sigmoid. (The input is
    centred, ``x - 0.5``, as in the convolutional models.) An image is cut
    into tiles, so its latent is ``(N, 32, H/p, W/p)``: one code vector per tile.
    """

    def __init__(self, patch_size: int = 16, hidden=(128, 64, 32), dropout: float = 0.2):
        if patch_size < 1 or not hidden:
            raise ValueError("patch_size must be >= 1 and hidden must name at least one layer")
        super().__init__(hidden[-1], patch_size)
        widths = [3 * patch_size**2, *hidden]
        self.encoder = nn.Sequential(Offset(-0.5), *_mlp(widths, dropout))
        self.decoder = nn.Sequential(*_mlp(widths[::-1], dropout), nn.Sigmoid())

    def g_a(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 32, H/p, W/p)``: each p x p tile flattened and encoded."""
        n, channels, height, width = x.shape
        p = self.factor
        tiles = x.reshape(n, channels, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
        codes = self.encoder(tiles.reshape(-1, channels * p * p))
        return codes.reshape(n, height // p, width // p, -1).permute(0, 3, 1, 2)

    def g_s(self, y: torch.Tensor) -> torch.Tensor:
        """``(N, 32, h, w)`` -> ``(N, 3, h p, w p)``: each code vector decoded to a tile."""
        n, _, rows, cols = y.shape
        p = self.factor
        tiles = self.decoder(y.permute(0, 2, 3, 1).reshape(n * rows * cols, -1))
        tiles = tiles.reshape(n, rows, cols, 3, p, p).permute(0, 3, 1, 4, 2, 5)
        return tiles.reshape(n, 3, rows * p, cols * p)


def _mlp(widths, dropout: float) -> nn.Sequential:
    """Linear layers between ``widths``; ReLU and dropout after each but the last."""
    layers = []
    for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(width_in, width_out))
        if index < len(widths) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class Offset(nn.Module):
    """Adds a constant. Encoders start with ``Offset(-0.5)`` so their input is centred on 0
    (ReLU networks learn much faster from centred data: +2 dB after 600 steps here); decoders
    end with ``Offset(0.5)``."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value

    def extra_repr(self) -> str:
        return f"{self.value:+g}"


class ConvPoolAutoencoder(Autoencoder):
    """Convolutions with max pooling in the encoder, nearest upsampling in the decoder.

    ``g_a``: ``downsamplings`` x [conv 3x3 -> ReLU -> max pool 2x2], then conv 3x3 to
    ``latent_channels`` with no activation (a ReLU there would waste half the latent range).
    ``g_s``: conv 3x3 -> ReLU, ``downsamplings`` x [upsample 2x -> conv 3x3 -> ReLU],
    conv 3x3 to RGB. Every convolution is padded, so sizes halve and double exactly. The
    input is centred (``x - 0.5``) and the output shifted back.
    """

    def __init__(self, latent_channels: int = 8, downsamplings: int = 3, channels: int = 64):
        _check_sizes(latent_channels, downsamplings, channels)
        super().__init__(latent_channels, 2**downsamplings)
        encoder, width = [Offset(-0.5)], 3
        for _ in range(downsamplings):
            encoder += [nn.Conv2d(width, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            width = channels
        encoder.append(nn.Conv2d(channels, latent_channels, 3, padding=1))
        decoder = [nn.Conv2d(latent_channels, channels, 3, padding=1), nn.ReLU()]
        for _ in range(downsamplings):
            decoder += [nn.Upsample(scale_factor=2, mode="nearest"),
                        nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        decoder += [nn.Conv2d(channels, 3, 3, padding=1), Offset(0.5)]
        self.g_a = nn.Sequential(*encoder)
        self.g_s = nn.Sequential(*decoder)


class StridedAutoencoder(Autoencoder):
    """Strided convolutions down, transposed convolutions up (5x5 kernels, stride 2).

    ``g_a``: ``downsamplings`` convolutions, ReLU between them, the last one to
    ``latent_channels``; ``g_s``: the transposed convolutions back, the last one to RGB. The
    input is centred (``x - 0.5``) and the output shifted back.
    """

    def __init__(self, latent_channels: int = 8, downsamplings: int = 3, channels: int = 64):
        _check_sizes(latent_channels, downsamplings, channels)
        super().__init__(latent_channels, 2**downsamplings)
        widths = [3] + [channels] * (downsamplings - 1) + [latent_channels]
        encoder, decoder = [Offset(-0.5)], []
        for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            if index:
                encoder.append(nn.ReLU())
                decoder.append(nn.ReLU())
            encoder.append(nn.Conv2d(width_in, width_out, 5, stride=2, padding=2))
            decoder.append(nn.ConvTranspose2d(widths[-1 - index], widths[-2 - index], 5,
                                              stride=2, padding=2, output_padding=1))
        decoder.append(Offset(0.5))
        self.g_a = nn.Sequential(*encoder)
        self.g_s = nn.Sequential(*decoder)


def _check_sizes(latent_channels: int, downsamplings: int, channels: int) -> None:
    if latent_channels < 1 or downsamplings < 1 or channels < 1:
        raise ValueError("latent_channels, downsamplings and channels must all be >= 1, got "
                         f"{latent_channels}, {downsamplings}, {channels}")


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected RGB images (N, 3, H, W), got {shape}; convert arrays with "
                         "course_lib.images.to_tensor")


@contextmanager
def _evaluation_mode(module: nn.Module):
    """Eval mode (dropout off) for a block, then the module's previous mode again."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable numbers in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# Training and evaluation


def reconstruction_loss(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss for :func:`course_lib.train.train`: MSE between ``x`` and ``model(x)``.

    Also logs the PSNR of that MSE (float output, no 8-bit rounding).
    """
    mse = F.mse_loss(model(x), x)
    return {"loss": mse, "psnr": -10 * torch.log10(mse.detach())}


def train_autoencoder(model: Autoencoder, steps: int, *, num_images: int | None = None,
                      patch_size: int = 64, batch_size: int = 16, lr: float = 1e-3,
                      seed: int = 0, **train_kwargs):
    """The course's recipe: random patches of the training set, Adam, MSE.

    The learning rate drops 10x for the last fifth of the steps. ``num_images`` limits the
    training set to its first images (the fast path); other keyword arguments go to
    :func:`course_lib.train.train` (``checkpoint_path``, ``log_csv``, ``progress`` …).
    Returns its :class:`~course_lib.train.TrainResult`.
    """
    from .datasets import PatchDataset, training_paths
    from .train import train

    if patch_size % model.factor:
        raise ValueError(f"patch_size {patch_size} must be a multiple of the model's factor "
                         f"{model.factor}")
    paths = training_paths()[:num_images]
    loader = torch.utils.data.DataLoader(
        PatchDataset(paths, patch_size, train=True), batch_size=batch_size, shuffle=True,
        drop_last=len(paths) >= batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(0.8 * steps)], gamma=0.1)
    return train(model, loader, reconstruction_loss, optimizer, scheduler=scheduler,
                 steps=steps, seed=seed, **train_kwargs)


@torch.no_grad()
def kodak_psnr(model: Autoencoder, indices=range(1, 25)) -> np.ndarray:
    """PSNR (dB, 8-bit RGB) of ``model.reconstruct`` on each listed Kodak image (no rounding
    of the latent: the best the model can do before any bits are counted)."""
    from .datasets import load_kodak
    from .images import to_tensor

    scores = []
    for index in indices:
        x = to_tensor(load_kodak(index))
        scores.append(metrics.psnr(x, model.reconstruct(x)).item())
    return np.array(scores)


# ---------------------------------------------------------------------------------------------
# Naive storage of the latents


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


# ---------------------------------------------------------------------------------------------
# Shipped weights

SWEEP = ((4, 2), (4, 8), (4, 32), (8, 8), (8, 32), (16, 8), (16, 32))
"""(factor, latent channels) of the strided models of the bottleneck sweep: three points at
1/8 value per pixel, two at 1/2, one at 2 and one at 1/32."""

PRETRAINED = {
    "dense": partial(DenseAutoencoder, patch_size=16),
    "dense_no_dropout": partial(DenseAutoencoder, patch_size=16, dropout=0.0),
    "conv_pool": partial(ConvPoolAutoencoder, latent_channels=8, downsamplings=3, channels=32),
    **{
        f"strided_f{factor}_c{channels}": partial(
            StridedAutoencoder, latent_channels=channels, downsamplings=factor.bit_length() - 1)
        for factor, channels in SWEEP
    },
}
"""Name -> constructor of every shipped model."""

TRAINING_STEPS = 2000


def weights_dir() -> Path:
    """The folder of the shipped autoencoders (``<name>.pt``, ``logs/<name>.csv``), verified
    and fetched on first use (see :mod:`course_lib.weights`)."""
    return weights.folder("autoencoders")


def load_pretrained(name: str) -> Autoencoder:
    """A shipped model with its trained weights, in evaluation mode, on the CPU."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(PRETRAINED)}")
    model = PRETRAINED[name]()
    # Weights are shipped in float16 to halve their size; computation stays in float32.
    state = torch.load(weights.path(f"autoencoders/{name}.pt"), map_location="cpu",
                       weights_only=True)
    model.load_state_dict({key: value.float() for key, value in state.items()})
    return model.eval()


def pretrained_latents(name: str = "strided_f8_c8", kodak_index: int = 23,
                       bits: int = 8) -> QuantizedLatents:
    """Quantised latents of Kodak image ``kodak_index`` under a shipped model.

    The same symbols on every machine (see :meth:`Autoencoder.latents`); notebook 04
    entropy-codes them. ``symbols`` is uint8 ``(C, h, w)``: (8, 64, 96) for the default.
    """
    from .datasets import load_kodak
    from .images import to_tensor

    return load_pretrained(name).latents(to_tensor(load_kodak(kodak_index)), bits)


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model``'s weights in float16."""
    state = {key: value.detach().cpu().half() for key, value in model.state_dict().items()}
    torch.save(state, Path(path))


def main(argv=None) -> None:
    """Train shipped models and record their checksums: the command behind the weights."""
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.autoencoders",
        description="Train the course's autoencoders and write weights/autoencoders/<name>.pt "
                    "(float16) and logs/<name>.csv, and record their sha256 (see "
                    "course_lib.weights). COURSE_DATA_MIRROR is honoured.")
    parser.add_argument("names", nargs="*", default=sorted(PRETRAINED),
                        help=f"models to train (default: all of {sorted(PRETRAINED)})")
    parser.add_argument("--steps", type=int, default=TRAINING_STEPS)
    parser.add_argument("--out", type=Path, default=Path("weights/autoencoders"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    for name in args.names:
        torch.manual_seed(0)
        model = PRETRAINED[name]()
        result = train_autoencoder(model, args.steps, log_csv=args.out / "logs" / f"{name}.csv",
                                   log_every=50, progress=False,
                                   checkpoint_path=args.out / "logs" / f"{name}.ckpt",
                                   checkpoint_every=500)
        save_weights(model, args.out / f"{name}.pt")
        (args.out / "logs" / f"{name}.ckpt").unlink()
        psnr = kodak_psnr(model.eval()).mean()
        print(f"{name}: {parameter_count(model)} parameters, {result.seconds:.0f} s, "
              f"Kodak PSNR {psnr:.2f} dB")
        weights.record([args.out / f"{name}.pt", args.out / "logs" / f"{name}.csv"])


if __name__ == "__main__":
    main()
