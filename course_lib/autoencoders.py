"""Autoencoders: a dense one and two convolutional ones (notebook 03).

Every model maps an image ``x (N, 3, H, W)`` in [0, 1] to a latent ``y (N, C, H/f, W/f)``
with its analysis transform ``g_a`` and back with its synthesis transform ``g_s``; ``f`` is
the model's ``factor`` (H and W must be multiples of it: :meth:`Autoencoder.encode` pads).

* :class:`DenseAutoencoder`: Flatten -> Dense 128 -> 64 -> 32 (ReLU, dropout) and the mirror
  image, applied tile by tile; the design of the articles that call it image compression.
* :class:`ConvPoolAutoencoder`: 3x3 convolutions with max pooling, nearest upsampling.
* :class:`StridedAutoencoder`: 5x5 convolutions with stride 2 and their transposes, the shape
  of the learned codecs of notebooks 06-07 (with ReLU where those use GDN).

No entropy model, no rate term in training: their latents are stored naively, rounded to a few
bits per value, by :mod:`course_lib.codecs.latent_files`; notebook 03 measures how far that is
from JPEG, notebooks 04-06 close the gap. The shipped weights and the recipe that made them are
in :mod:`course_lib.recipes.autoencoders`.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from torch import nn

from .images import crop, pad_to_multiple

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
        with evaluation_mode(self):
            return self.decode(self.encode(x), *x.shape[-2:])

    @torch.no_grad()
    def encode_float64(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` in float64 (evaluation mode), returning a float64 latent.

        float32 results differ in the last digit between CPUs and thread counts, which could
        round a latent value the other way; in float64 every machine gets the same symbols.
        """
        with evaluation_mode(self):
            return copy.deepcopy(self).double().encode(x.double())


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
def evaluation_mode(module: nn.Module):
    """Eval mode (dropout off) for a ``with`` block, then the module's previous mode again."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
