"""Notebook 06's pieces: small rate–distortion models, their one training recipe, the latents of
a factorized prior coded with the readable rANS coder, and the measurements the notebook prints.

* :func:`factorized_prior` builds the course's :class:`~course_lib.models.FactorizedPrior`, or
  the same network with ReLU in place of GDN / IGDN (for the GDN-versus-ReLU comparison);
* :func:`train_rd` trains one with the course's loop (:func:`course_lib.train.train`) on
  ``loss = bpp + λ·255²·MSE``, the entropy model's quantiles on an optimiser of their own;
* :func:`encode_readable` / :func:`decode_readable` code the latents with the readable rANS
  of :mod:`course_lib.entropy.rans` and the model's own integer CDF tables, in one stream the
  size of the fast path's (:mod:`course_lib.entropy.fast`); a stream that cannot be decoded
  raises :class:`~course_lib.entropy.DecodeError`, its header checked against its length first;
* :func:`measure` codes an image to a real file and reports bytes, PSNR and the rate the
  entropy model predicts, with noise and with rounding;
* :func:`load_pretrained` loads the weights shipped in ``weights/notebook06`` (made by
  ``weights/notebook06/train.py``) after checking their sha256 (:mod:`course_lib.weights`).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from . import datasets, metrics, weights
from .codecs import learned
from .entropy import rans
from .entropy.cdf import (
    BYPASS_BITS,
    MAX_BYPASS_GROUPS,
    CdfTable,
    bypass_groups,
    check_stream_length,
    join_bypass_groups,
    quantize_pmf,
)
from .entropy.errors import DecodeError
from .images import crop, pad_to_multiple, to_tensor
from .layers import GDN
from .models import FactorizedPrior, RateDistortionLoss, rate_bits, split_parameters
from .train import TrainResult, train

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


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


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
    paths = datasets.training_paths()[:num_images]
    loader = DataLoader(datasets.PatchDataset(paths, patch_size, train=True),
                        batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    main, quantiles = split_parameters(model)
    optimizer = torch.optim.Adam(main, lr=lr)
    aux_optimizer = torch.optim.Adam(quantiles, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [max(1, steps * 4 // 5)], 0.1)
    return train(model, loader, rd_loss_fn(lmbda), optimizer, steps=steps,
                 aux_optimizer=aux_optimizer, scheduler=scheduler, device="cpu", seed=seed,
                 clip_grad_norm=1.0, log_every=log_every, log_csv=log_csv, progress=progress)


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
    y = model.g_a(_padded(model, x))
    bottleneck = model.entropy_bottleneck
    _, noisy = bottleneck(y, mode="noise")
    _, rounded = bottleneck(y, mode="round")
    symbols, indexes = latent_symbols(model, x)
    return {"noise": float(rate_bits({"y": noisy})), "round": float(rate_bits({"y": rounded})),
            "tables": bottleneck.table().information_bits(symbols, indexes)}


@torch.no_grad()
def latent_symbols(model: FactorizedPrior, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The integers the entropy bottleneck codes for ``x`` and the table of each:
    ``(symbols, indexes)``, both int64 ``(1, M, h, w)`` (index = channel)."""
    y = model.g_a(_padded(model, x))
    bottleneck = model.entropy_bottleneck
    bottleneck.update()
    symbols = torch.round(y - bottleneck.medians.view(1, -1, 1, 1)).long()
    indexes = torch.arange(y.shape[1]).view(1, -1, 1, 1).expand_as(symbols)
    return symbols.numpy(), indexes.numpy().copy()


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
    y = model.g_a(_padded(model, x))
    bottleneck = model.entropy_bottleneck
    medians = bottleneck.medians.view(1, -1, 1, 1)
    inputs = {"noise": bottleneck(y, mode="noise")[0],
              "round": torch.round(y - medians) + medians}
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


# -- the readable coder on the model's tables ----------------------------------------------
_BYPASS_CDF = quantize_pmf(np.ones(1 << BYPASS_BITS))
_COUNT = struct.Struct("<I")


class TableWalk:
    """A model for :func:`course_lib.entropy.rans.rans_encode`: symbol ``i`` of the message
    uses table ``indexes[i]``; the symbols after the last index are 4-bit bypass groups.

    The readable coder asks its model for a CDF before each symbol and calls ``update``
    after it, so walking a list of tables is all a per-latent model needs.
    """

    def __init__(self, table: CdfTable, indexes: np.ndarray, position: int = 0):
        self.table, self.indexes, self.position = table, indexes, position
        self.precision = table.precision
        self.alphabet_size = max(int(table.lengths.max()), _BYPASS_CDF.size - 1)

    def cdf(self) -> np.ndarray:
        if self.position < self.indexes.size:
            return self.table.cdf(self.indexes[self.position])
        return _BYPASS_CDF

    def update(self, symbol: int) -> None:
        self.position += 1

    def copy(self) -> TableWalk:
        return TableWalk(self.table, self.indexes, self.position)


def encode_readable(values, indexes, table: CdfTable) -> bytes:
    """Code integer ``values`` (value ``i`` with CDF ``indexes[i]``) with the readable rANS.

    Same escape scheme as the fast path (:func:`course_lib.entropy.fast.encode_with_indexes`):
    table symbols, then one 4-bit group count per escaped value, then the groups. The stream
    starts with the number of bypass symbols (4 bytes) so the decoder knows the message
    length; the fast path instead ends with a 4-byte checksum, so the sizes agree to a word.
    """
    flat_indexes = table.check_indexes(indexes).reshape(-1)
    symbols, overflow = table.split_values(values, indexes)
    counts, groups = bypass_groups(overflow)
    message = np.concatenate([symbols, counts, groups])
    return (_COUNT.pack(counts.size + groups.size)
            + rans.rans_encode(message, TableWalk(table, flat_indexes)))


def decode_readable(data: bytes, indexes, table: CdfTable) -> np.ndarray:
    """Inverse of :func:`encode_readable`: int64 values with the shape of ``indexes``.

    Raises :class:`DecodeError` for a stream it cannot decode, checking before it decodes that
    the header's count of bypass symbols is possible (at most 16 per value: a group count and
    15 groups) and that the stream is long enough for all the symbols (each bypass symbol
    costs 4 bits, each value at least its table's :meth:`~CdfTable.minimum_bits`).
    """
    if len(data) < _COUNT.size:
        raise DecodeError("readable stream too short for its header")
    flat_indexes = table.check_indexes(indexes).reshape(-1)
    (extra,) = _COUNT.unpack_from(data)
    if extra > (1 + MAX_BYPASS_GROUPS) * flat_indexes.size:
        raise DecodeError(f"readable stream: its header announces {extra} bypass symbols, more "
                          f"than {flat_indexes.size} values can have")
    check_stream_length(len(data) - _COUNT.size,
                        table.minimum_bits()[flat_indexes].sum() + BYPASS_BITS * extra)
    message = rans.rans_decode(data[_COUNT.size:], flat_indexes.size + extra,
                               TableWalk(table, flat_indexes))
    symbols = message[: flat_indexes.size]
    num_escaped = int(np.count_nonzero(symbols == table.lengths[flat_indexes] - 1))
    counts = message[flat_indexes.size : flat_indexes.size + num_escaped]
    groups = message[flat_indexes.size + num_escaped :]
    if num_escaped + int(counts.sum()) != extra:
        raise DecodeError("readable stream: escape counts do not match its header")
    return table.merge_values(symbols, indexes, join_bypass_groups(counts, groups))


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


def bits_per_channel(likelihoods: torch.Tensor) -> np.ndarray:
    """``-sum log2 p`` of each channel of ``likelihoods (N, C, H, W)``: ``(C,)`` bits."""
    return (-torch.log2(likelihoods.detach().double())).sum(dim=(0, 2, 3)).numpy()
