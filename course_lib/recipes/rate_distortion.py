"""Notebook 06's recipe: small rate–distortion models, their training, and the measurements
the notebook prints.

* :func:`factorized_prior` builds the course's :class:`~course_lib.models.FactorizedPrior`, or
  the same network with ReLU in place of GDN / IGDN (for the GDN-versus-ReLU comparison);
* :func:`train_rd` trains one with the course's one recipe
  (:func:`course_lib.recipes.train_on_patches`) on ``loss = bpp + λ·255²·MSE``, the entropy
  model's quantiles on an optimiser of their own;
* :func:`measure` codes an image to a real file and reports bytes, PSNR and the rate the
  entropy model predicts, with noise and with rounding; :func:`rate_estimates` gives those
  predictions, the ideal code length of the model's integer tables among them (the latents
  are coded with :func:`course_lib.entropy.rans.encode_with_indexes` in the notebook);
* :func:`load_pretrained` loads the weights shipped in ``weights/notebook06`` (made by
  ``weights/notebook06/train.py``) after checking their sha256 (:mod:`course_lib.weights`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import metrics, weights
from ..codecs import learned
from ..images import crop, pad_to_multiple, to_tensor
from ..layers import GDN
from ..models import FactorizedPrior, RateDistortionLoss, rate_bits
from ..train import TrainResult
from . import train_on_patches

SMALL_N, SMALL_M = 64, 96  # channels of the transforms and of the latent y
LAMBDA = 0.0130  # CompressAI's fourth MSE point: about 0.5–1 bpp once trained
ACTIVATIONS = ("gdn", "relu")


# -- models --------------------------------------------------------------------------------
def factorized_prior(n: int = SMALL_N, m: int = SMALL_M, activation: str = "gdn"
                     ) -> FactorizedPrior:
    """A factorized-prior model; ``activation="relu"`` swaps every GDN / IGDN for a ReLU.

    Both variants start from the same convolution weights under the same seed (GDN's own
    initialisation draws no random numbers), so a comparison isolates the nonlinearity.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    model = FactorizedPrior(n, m)
    if activation == "relu":
        for transform in (model.g_a, model.g_s):
            for position, layer in enumerate(transform):
                if isinstance(layer, GDN):
                    transform[position] = nn.ReLU()
    return model


# -- training ------------------------------------------------------------------------------
def rd_loss_fn(lmbda: float = LAMBDA):
    """``loss_fn(model, batch)`` for :func:`course_lib.train.train`: the Lagrangian
    ``bpp + λ·255²·MSE`` as ``"loss"``, the quantiles' ``"aux_loss"``, and ``bpp``, ``mse``
    and ``psnr`` (of the training-time reconstruction) for the log."""
    criterion = RateDistortionLoss(lmbda)

    def loss_fn(model, batch):
        losses = criterion(model(batch), batch)
        losses["aux_loss"] = model.aux_loss()
        losses["psnr"] = -10 * torch.log10(losses["mse"].detach())
        return losses

    return loss_fn


def train_rd(model: FactorizedPrior, steps: int, lmbda: float = LAMBDA, *,
             decoder_quantization: str = "noise", patch_size: int = 64, batch_size: int = 8,
             lr: float = 1e-3, num_images: int | None = None, seed: int = 0,
             log_every: int = 10, log_csv=None, progress: bool = False) -> TrainResult:
    """Train ``model`` in place: the recipe behind every model of notebook 06.

    Random ``patch_size`` crops of the course training set (the first ``num_images`` only, if
    given), batches of ``batch_size``, Adam at ``lr`` (ten times lower for the last fifth of
    the steps), gradients clipped to norm 1, the quantiles on their own Adam at 1e-3.
    ``decoder_quantization``: how the synthesis transform sees ``y`` in training, ``"noise"``
    or ``"ste"`` (rounded, gradient passed straight through); the rate always uses noise.
    """
    if decoder_quantization not in ("noise", "ste"):
        raise ValueError("decoder_quantization must be 'noise' or 'ste', got "
                         f"{decoder_quantization!r}")
    if steps < 1 or patch_size % model.multiple:
        raise ValueError(f"need steps >= 1 and a patch size that is a multiple of "
                         f"{model.multiple}; got steps={steps}, patch_size={patch_size}")
    model.decoder_quantization = decoder_quantization
    return train_on_patches(model, rd_loss_fn(lmbda), steps, patch_size=patch_size,
                            batch_size=batch_size, lr=lr, aux_lr=1e-3, num_images=num_images,
                            seed=seed, device="cpu", clip_grad_norm=1.0, log_every=log_every,
                            log_csv=log_csv, progress=progress)


# -- shipped weights -----------------------------------------------------------------------
def weights_dir() -> Path:
    """The folder of notebook 06's shipped models (``<name>.pt``, ``logs/<name>.csv``),
    verified and fetched on first use (see :mod:`course_lib.weights`)."""
    return weights.folder("notebook06")


def load_pretrained(name: str) -> FactorizedPrior:
    """A model of ``weights/notebook06`` in evaluation mode, its sha256 checked first.

    The files are written by :func:`course_lib.codecs.learned.save_weights` (float16
    parameters, CDF tables built from them); the model is rebuilt from the file's ``config``
    with :func:`factorized_prior`, which also knows the ReLU variant.

    Its ``config`` attribute says how it was trained (activation, λ, quantisation, steps).
    """
    shipped = sorted(Path(name).stem for name in weights.checksums()
                     if name.startswith("notebook06/") and name.endswith(".pt"))
    if name not in shipped:
        raise ValueError(f"no model {name!r} in weights/notebook06; shipped: {shipped}")
    saved = torch.load(weights.path(f"notebook06/{name}.pt"), map_location="cpu",
                       weights_only=True)
    config = saved["config"]
    model = factorized_prior(config["n"], config["m"], config["activation"])
    model.load_state_dict(saved["state_dict"])
    model.decoder_quantization = config["decoder_quantization"]
    model.config = config
    return model.eval()


# -- rates: estimated, ideal, real ---------------------------------------------------------
def _padded(model, x: torch.Tensor) -> torch.Tensor:
    padded, _ = pad_to_multiple(x, model.multiple)
    return padded


@torch.no_grad()
def rate_estimates(model: FactorizedPrior, x: torch.Tensor) -> dict[str, float]:
    """Bits the entropy model predicts for ``x (1, 3, H, W)``: ``-sum log2 p`` of the latents
    with uniform noise (what training optimises) and rounded (what is coded), and the ideal
    code length with the integer tables (``"tables"``)."""
    padded = _padded(model, x)
    y = model.g_a(padded)
    bottleneck = model.entropy_bottleneck
    _, noisy = bottleneck(y, mode="noise")
    _, rounded = bottleneck(y, mode="round")
    coded = model.symbols(padded)  # what the file holds
    return {"noise": float(rate_bits({"y": noisy})), "round": float(rate_bits({"y": rounded})),
            "tables": bottleneck.table().information_bits(coded.y, coded.y_indexes)}


@dataclass
class Measurement:
    """One image through a model: a real file, its size and quality, and the predictions."""

    num_bytes: int  # the whole file (container header included)
    bpp: float
    psnr: float
    estimated_bpp: dict  # {"noise", "round", "tables"}: -sum log2 p / pixels
    x_hat: torch.Tensor  # (1, 3, H, W) decoded from the file


def measure(model: FactorizedPrior, image: np.ndarray, name: str = "notebook06") -> Measurement:
    """Code uint8 ``image (H, W, 3)`` to a course codec file and back, and measure it."""
    model.eval()
    # The container names the weights by a hash prefix; the parameters' hash serves here.
    digest = hashlib.sha256(b"".join(parameter.detach().numpy().tobytes()
                                     for parameter in model.parameters())).hexdigest()
    loaded = learned.LoadedModel(name, model, digest, {})
    data = learned.compress_image(image, 0, loaded)
    decoded = learned.decompress_image(data, loaded)
    x, x_hat = to_tensor(image), to_tensor(decoded)
    height, width = image.shape[:2]
    estimates = {key: bits / (height * width) for key, bits in rate_estimates(model, x).items()}
    return Measurement(len(data), metrics.bpp(len(data), height, width),
                       metrics.psnr(x, x_hat).item(), estimates, x_hat)


@torch.no_grad()
def decoder_input_gap(model: FactorizedPrior, x: torch.Tensor) -> dict[str, float]:
    """PSNR of ``x (1, 3, H, W)`` when the decoder gets ``y`` with uniform noise (as a
    noise-trained decoder did in training) and rounded (as it gets from a file)."""
    height, width = x.shape[-2:]
    padded = _padded(model, x)
    coded = model.symbols(padded, means=True)  # the file's integers, and what they add to
    inputs = {"noise": model.entropy_bottleneck(model.g_a(padded), mode="noise")[0],
              "round": torch.from_numpy(coded.y + coded.means).float()}
    return {mode: metrics.psnr(x, crop(model.g_s(y_hat), height, width).clamp(0, 1)).item()
            for mode, y_hat in inputs.items()}


@torch.no_grad()
def channel_density(bottleneck, channel: int, values) -> np.ndarray:
    """Density of the *noisy* latent ``y + u`` of one channel at ``values`` (1-D floats).

    With ``u`` uniform on [-0.5, 0.5), that density is ``c(v + 1/2) - c(v - 1/2)`` for the
    learned cumulative ``c``: the very function whose values at the rounding grid are the
    probabilities of the coded integers.
    """
    if not 0 <= channel < bottleneck.channels:
        raise ValueError(f"channel must be in 0..{bottleneck.channels - 1}, got {channel}")
    values = torch.as_tensor(np.asarray(values, dtype=np.float32)).view(1, 1, -1)
    grid = values.expand(bottleneck.channels, 1, -1)
    density = bottleneck.bin_masses(grid)  # the model's own bin-mass function
    return density[channel, 0].numpy().astype(np.float64)


# -- a toy rate–distortion curve -----------------------------------------------------------
def scalar_quantizer_rd(samples: np.ndarray, steps) -> tuple[np.ndarray, np.ndarray]:
    """Rate (empirical entropy, bits/sample) and MSE of rounding ``samples`` to multiples of
    each step size in ``steps``: the simplest rate–distortion trade-off. Returns two
    ``(len(steps),)`` arrays."""
    samples = np.asarray(samples, dtype=np.float64).ravel()
    rates, distortions = [], []
    for step in steps:
        if not step > 0:
            raise ValueError(f"step sizes must be positive, got {step}")
        indexes = np.round(samples / step)
        _, counts = np.unique(indexes, return_counts=True)
        probabilities = counts / samples.size
        rates.append(float(-(probabilities * np.log2(probabilities)).sum()))
        distortions.append(float(np.mean((samples - indexes * step) ** 2)))
    return np.array(rates), np.array(distortions)


def lagrangian_choice(rates, distortions, lmbda: float) -> int:
    """Index of the operating point minimising ``R + λ·D``."""
    if not lmbda > 0:
        raise ValueError(f"λ must be positive, got {lmbda}")
    costs = np.asarray(rates, dtype=np.float64) + lmbda * np.asarray(distortions, np.float64)
    return int(np.argmin(costs))
