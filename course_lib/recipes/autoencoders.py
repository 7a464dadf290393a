"""Notebooks 03-04's recipe: the shipped autoencoders and how they were trained.

:func:`train_autoencoder` trains a model of :mod:`course_lib.autoencoders` on MSE with the
course's one recipe (:func:`course_lib.recipes.train_on_patches`). Trained weights ship in the
repository's ``weights/autoencoders`` folder, with training logs and ``README.md`` (the command
that made them, ``python -m course_lib.recipes.autoencoders``); :func:`load_pretrained` checks
their sha256 before loading (see :mod:`course_lib.weights`). :func:`pretrained_latents` gives
the quantised latents of a Kodak image, reproducibly, for notebook 04 to entropy-code.
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics, weights
from ..autoencoders import Autoencoder, ConvPoolAutoencoder, DenseAutoencoder, StridedAutoencoder
from ..codecs.latent_files import QuantizedLatents, image_latents
from ..datasets import load_kodak
from ..images import to_tensor
from ..train import parameter_count
from . import train_on_patches


def reconstruction_loss(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss for :func:`course_lib.train.train`: MSE between ``x`` and ``model(x)``.

    Also logs the PSNR of that MSE (float output, no 8-bit rounding).
    """
    mse = F.mse_loss(model(x), x)
    return {"loss": mse, "psnr": -10 * torch.log10(mse.detach())}


def train_autoencoder(model: Autoencoder, steps: int, *, num_images: int | None = None,
                      patch_size: int = 64, batch_size: int = 16, lr: float = 1e-3,
                      seed: int = 0, **train_kwargs):
    """The course's recipe for autoencoders: random patches of the training set, Adam, MSE.

    The learning rate drops 10x for the last fifth of the steps. ``num_images`` limits the
    training set to its first images (the fast path); other keyword arguments go to
    :func:`course_lib.train.train` (``checkpoint_path``, ``log_csv``, ``progress`` …).
    Returns its :class:`~course_lib.train.TrainResult`.
    """
    if patch_size % model.factor:
        raise ValueError(f"patch_size {patch_size} must be a multiple of the model's factor "
                         f"{model.factor}")
    return train_on_patches(model, reconstruction_loss, steps, patch_size=patch_size,
                            batch_size=batch_size, lr=lr, num_images=num_images, seed=seed,
                            **train_kwargs)


@torch.no_grad()
def kodak_psnr(model: Autoencoder, indices=range(1, 25)) -> np.ndarray:
    """PSNR (dB, 8-bit RGB) of ``model.reconstruct`` on each listed Kodak image (no rounding
    of the latent: the best the model can do before any bits are counted)."""
    scores = []
    for index in indices:
        x = to_tensor(load_kodak(index))
        scores.append(metrics.psnr(x, model.reconstruct(x)).item())
    return np.array(scores)


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

    The same symbols on every machine (see :func:`~course_lib.codecs.latent_files.
    image_latents`); notebook 04 entropy-codes them. ``symbols`` is uint8 ``(C, h, w)``:
    (8, 64, 96) for the default.
    """
    return image_latents(load_pretrained(name), to_tensor(load_kodak(kodak_index)), bits)


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model``'s weights in float16."""
    state = {key: value.detach().cpu().half() for key, value in model.state_dict().items()}
    torch.save(state, Path(path))


def main(argv=None) -> None:
    """Train shipped models and record their checksums: the command behind the weights."""
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.recipes.autoencoders",
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
