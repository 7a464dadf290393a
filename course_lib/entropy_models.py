"""Entropy models of the learned codec: a factorized prior and a Gaussian conditional.

Both do two jobs:

* **training** (``forward``): return the latents as the decoder will see them and their
  *likelihoods*, from which the rate is ``-sum log2 likelihood`` bits. Rounding has no useful
  gradient, so training replaces it by additive uniform noise (``"noise"``) or by rounding with
  a straight-through gradient (``"ste"``);
* **coding** (``compress`` / ``decompress``): round the latents and code them to real bytes
  with integer CDF tables (:mod:`course_lib.entropy.cdf`) and the fast rANS coder
  (:mod:`course_lib.entropy.fast`).

The CDF tables are built from the float model by one fixed float64 procedure and then kept as
integer tensors in the state dict: a loaded model codes with exactly the tables it was saved
with. (They are the modules' "extra state", not buffers, so that DistributedDataParallel does
not try to synchronise tables whose size changes when they are rebuilt.) They are rebuilt
automatically whenever the parameters have changed since they were built (coding or saving
calls :meth:`EntropyBottleneck.update` as needed), so nobody can forget.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .entropy import fast
from .entropy.cdf import (
    CdfTable,
    check_stream_length,
    gaussian_cdf_table,
    log_scale_table,
    scale_indexes,
)
from .layers import lower_bound

LIKELIHOOD_BOUND = 1e-9
CDF_PRECISION = 16


def quantize(x: torch.Tensor, mode: str, offset: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Quantise ``x`` on the integer grid shifted by ``offset``.

    ``"noise"``: add uniform noise in [-0.5, 0.5) (training proxy, differentiable);
    ``"ste"``: round, gradient passed straight through; ``"round"``: round, no gradient.
    """
    if mode == "noise":
        return x + torch.empty_like(x).uniform_(-0.5, 0.5)
    rounded = torch.round(x - offset) + offset
    if mode == "ste":
        return x + (rounded - x).detach()
    if mode == "round":
        return rounded
    raise ValueError(f"quantisation mode must be 'noise', 'ste' or 'round', not {mode!r}")


class _TableHolder(nn.Module):
    """Keeps integer CDF tables (on the CPU) and saves them in the state dict."""

    _table_names = ("_cdfs", "_cdf_lengths", "_cdf_offsets")

    def _set_table(self, table: CdfTable) -> None:
        self._cdfs = torch.from_numpy(table.cdfs)
        self._cdf_lengths = torch.from_numpy(table.lengths)
        self._cdf_offsets = torch.from_numpy(table.offsets)

    def table(self) -> CdfTable:
        return CdfTable(self._cdfs.numpy(), self._cdf_lengths.numpy(),
                        self._cdf_offsets.numpy(), CDF_PRECISION)

    def get_extra_state(self) -> dict:
        return {name: getattr(self, name).clone() for name in self._table_names}

    def set_extra_state(self, state: dict) -> None:
        for name in self._table_names:
            setattr(self, name, state[name].cpu().clone())


class EntropyBottleneck(_TableHolder):
    """Factorized prior: a learned, flexible density per channel (Ballé et al. 2018, §6.1).

    The cumulative of each channel's density is a small monotone network ``c(x) =
    sigmoid(f_K(... f_1(x)))``; the likelihood of a quantised value is the mass of its bin,
    ``c(x + 0.5) - c(x - 0.5)``. Three *quantiles* per channel (tails and median) are learned
    by an auxiliary loss (:meth:`loss`) and define the range the CDF tables cover and the
    rounding offsets (values are rounded around the median).

    Shapes: ``forward(y (N, C, H, W)) -> (y_hat (N, C, H, W), likelihoods (N, C, H, W))``.
    """

    def __init__(self, channels: int, filters=(3, 3, 3, 3), init_scale: float = 10.0,
                 tail_mass: float = 1e-9):
        super().__init__()
        self.channels = channels
        self.tail_mass = tail_mass
        widths = (1, *filters, 1)
        scale = init_scale ** (1 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(widths) - 1):
            init = math.log(math.expm1(1 / scale / widths[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[i + 1], widths[i]),
                                                         init)))
            self.biases.append(nn.Parameter(torch.empty(channels, widths[i + 1], 1)
                                            .uniform_(-0.5, 0.5)))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))
        self.quantiles = nn.Parameter(
            torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1))
        target = math.log(2 / tail_mass - 1)
        self.register_buffer("target", torch.tensor([-target, 0.0, target]), persistent=False)
        self._cdfs = torch.zeros(0, 0, dtype=torch.int64)  # built by update()
        self._cdf_lengths = torch.zeros(0, dtype=torch.int64)
        self._cdf_offsets = torch.zeros(0, dtype=torch.int64)
        self._cdf_fingerprint = torch.zeros(32, dtype=torch.uint8)

    # -- the density ----------------------------------------------------------------------
    def _logits_cumulative(self, x: torch.Tensor, stop_gradient: bool = False,
                           params: dict | None = None) -> torch.Tensor:
        """Logit of the cumulative at ``x`` of shape ``(C, 1, S)``; returns ``(C, 1, S)``."""
        matrices = params["matrices"] if params else list(self.matrices)
        biases = params["biases"] if params else list(self.biases)
        factors = params["factors"] if params else list(self.factors)
        logits = x
        for i, (matrix, bias) in enumerate(zip(matrices, biases, strict=True)):
            if stop_gradient:
                matrix, bias = matrix.detach(), bias.detach()
            logits = torch.matmul(F.softplus(matrix), logits) + bias
            if i < len(factors):
                factor = factors[i].detach() if stop_gradient else factors[i]
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits

    def _likelihood(self, x: torch.Tensor, params: dict | None = None):
        """Bin masses of ``x`` (C, 1, S); also the lower/upper logits (for tail masses)."""
        lower = self._logits_cumulative(x - 0.5, params=params)
        upper = self._logits_cumulative(x + 0.5, params=params)
        # Subtract in the tail where both sigmoids are small, for precision.
        sign = -torch.sign(lower + upper).detach()
        likelihood = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return likelihood, lower, upper

    def bin_masses(self, values: torch.Tensor) -> torch.Tensor:
        """Mass of the unit bin around each of ``values`` ``(C, 1, S)``, channel by channel:
        ``c(v + 1/2) - c(v - 1/2)`` for the learned cumulative ``c`` (no lower bound)."""
        if values.ndim != 3 or values.shape[:2] != (self.channels, 1):
            raise ValueError(f"values must have shape ({self.channels}, 1, S), got "
                             f"{tuple(values.shape)}")
        return self._likelihood(values)[0]

    def likelihood(self, values: torch.Tensor) -> torch.Tensor:
        """Bin masses (lower-bounded as in :meth:`forward`) of given values ``(N, C, H, W)``,
        e.g. latents already quantised (or softly rounded) by the caller."""
        channels = values.shape[1]
        flat = values.transpose(0, 1).reshape(channels, 1, -1)
        likelihood = self._likelihood(flat)[0]
        likelihood = likelihood.reshape(channels, values.shape[0], *values.shape[2:])
        return lower_bound(likelihood.transpose(0, 1), LIKELIHOOD_BOUND)

    @property
    def medians(self) -> torch.Tensor:
        """(C,) the learned median of each channel."""
        return self.quantiles[:, 0, 1].detach()

    def loss(self) -> torch.Tensor:
        """Auxiliary loss that moves the quantiles to the density's tails and median."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    def forward(self, y: torch.Tensor, mode: str | None = None):
        """``mode`` defaults to ``"noise"`` in training and ``"round"`` in evaluation."""
        mode = mode or ("noise" if self.training else "round")
        with torch.autocast(y.device.type, enabled=False):  # likelihoods need float32
            return self._forward(y.float(), mode)

    def _forward(self, y: torch.Tensor, mode: str):
        channels = y.shape[1]
        if channels != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {channels}")
        medians = self.medians.view(1, -1, 1, 1)
        y_hat = quantize(y, mode, medians)
        values = y_hat.transpose(0, 1).reshape(channels, 1, -1)
        likelihood, _, _ = self._likelihood(values)
        likelihood = likelihood.reshape(channels, y.shape[0], *y.shape[2:]).transpose(0, 1)
        return y_hat, lower_bound(likelihood, LIKELIHOOD_BOUND)

    # -- integer tables ---------------------------------------------------------------------
    def _fingerprint(self) -> torch.Tensor:
        digest = hashlib.sha256()
        for parameter in self.parameters():
            digest.update(parameter.detach().cpu().float().numpy().tobytes())
        return torch.frombuffer(bytearray(digest.digest()), dtype=torch.uint8)

    _table_names = (*_TableHolder._table_names, "_cdf_fingerprint")

    def tables_are_current(self) -> bool:
        return self._cdfs.numel() > 0 and torch.equal(self._cdf_fingerprint,
                                                      self._fingerprint())

    @torch.no_grad()
    def update(self, force: bool = False) -> bool:
        """(Re)build the integer CDF tables if the parameters changed. Returns True if built.

        Everything runs on the CPU in float64 so that every machine builds the same integers.
        """
        if not force and self.tables_are_current():
            return False
        params = {name: [p.detach().cpu().double() for p in getattr(self, name)]
                  for name in ("matrices", "biases", "factors")}
        quantiles = self.quantiles.detach().cpu().double()
        medians = quantiles[:, 0, 1]
        minima = torch.ceil(medians - quantiles[:, 0, 0]).clamp_min(0).long()
        maxima = torch.ceil(quantiles[:, 0, 2] - medians).clamp_min(0).long()
        lengths = (minima + maxima + 1)
        samples = torch.arange(int(lengths.max()), dtype=torch.float64)
        samples = (samples[None, :] + (medians - minima)[:, None]).unsqueeze(1)
        pmf, lower, upper = self._likelihood(samples, params=params)
        pmf = pmf[:, 0, :].numpy()
        tails = (torch.sigmoid(lower[:, 0, 0]) + torch.sigmoid(-upper[:, 0, -1])).numpy()
        table = CdfTable.from_pmfs(
            [pmf[c, : lengths[c]] for c in range(self.channels)], (-minima).numpy(),
            CDF_PRECISION, tails)
        self._set_table(table)
        self._cdf_fingerprint = self._fingerprint()
        return True

    def _indexes(self, y_shape) -> np.ndarray:
        """The table of every latent of a ``y_shape`` (N, C, H, W) batch: its channel."""
        indexes = torch.arange(self.channels).view(1, -1, 1, 1)
        return indexes.expand(y_shape[0], -1, *y_shape[2:]).numpy().copy()

    def symbols(self, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The integers coded for ``y`` (N, C, H, W), rounded around each channel's median,
        and the table of each (its channel): ``(symbols, indexes)``, int64 numpy arrays.
        Tables update if stale."""
        self.update()
        symbols = torch.round(y.detach() - self.medians.view(1, -1, 1, 1)).long()
        return symbols.cpu().numpy(), self._indexes(y.shape)

    def compress(self, y: torch.Tensor) -> bytes:
        """Code ``y`` (N, C, H, W): its :meth:`symbols` with their tables."""
        symbols, indexes = self.symbols(y)
        return fast.encode_with_indexes(symbols, indexes, self.table())

    def decompress(self, data: bytes, shape) -> torch.Tensor:
        """Decode ``shape = (N, C, H, W)`` latents coded by :meth:`compress`.

        Data too short for that many latents is refused
        (:class:`~course_lib.entropy.DecodeError`) before their table indexes are built: a
        header's shape cannot make it allocate more than the data can hold.
        """
        if not self.tables_are_current():
            raise StaleTablesError(
                "this entropy model's CDF tables do not match its parameters (they changed "
                "since the tables were built): the decoder must use exactly the encoder's "
                "tables, so call model.update() on the encoder's side before saving, or load "
                "the weights the file was made with")
        table = self.table()
        positions = shape[0] * math.prod(shape[2:])
        check_stream_length(len(data), positions * table.minimum_bits().sum(), "latents")
        indexes = self._indexes(shape)
        symbols = fast.decode_with_indexes(data, indexes, table)
        medians = self.medians.cpu().view(1, -1, 1, 1)
        return torch.from_numpy(symbols).to(medians.dtype) + medians


class StaleTablesError(RuntimeError):
    """A decoder asked to decode with CDF tables that no longer match the model's parameters.
    """


class GaussianConditional(_TableHolder):
    """Gaussian entropy model whose scale (and mean) come from a hyperprior.

    The likelihood of ``y`` is the mass of N(mean, scale²) over the unit bin around it. For
    coding, each scale is replaced by the nearest one (in log) of a fixed log-spaced table
    (64 scales from 0.11 to 256), whose integer CDFs are built once (float64, deterministic).

    Shapes: ``forward(y, scales, means=None)``, all ``(N, C, H, W)``.
    """

    def __init__(self, scale_table=None, scale_bound: float = 0.11, tail_mass: float = 1e-9):
        super().__init__()
        scales = log_scale_table() if scale_table is None else np.asarray(scale_table, float)
        self.scale_bound = scale_bound
        self.register_buffer("scale_table", torch.from_numpy(scales))
        self._set_table(gaussian_cdf_table(scales, CDF_PRECISION, tail_mass))

    def likelihood(self, y: torch.Tensor, scales: torch.Tensor, means=None) -> torch.Tensor:
        values = y - means if means is not None else y
        scales = lower_bound(scales, self.scale_bound)
        values = torch.abs(values)
        upper = 0.5 * torch.erfc(-((0.5 - values) / scales) / math.sqrt(2))
        lower = 0.5 * torch.erfc(-((-0.5 - values) / scales) / math.sqrt(2))
        return lower_bound(upper - lower, LIKELIHOOD_BOUND)

    def forward(self, y, scales, means=None, mode: str | None = None):
        mode = mode or ("noise" if self.training else "round")
        with torch.autocast(y.device.type, enabled=False):  # likelihoods need float32
            y, scales = y.float(), scales.float()
            means = means.float() if means is not None else None
            offset = means if means is not None else 0.0
            y_hat = quantize(y, mode, offset)
            return y_hat, self.likelihood(y_hat, scales, means)

    def indexes(self, scales: torch.Tensor) -> np.ndarray:
        """Table index per scale, computed in float64 (see the codec's determinism notes)."""
        return scale_indexes(scales.detach().cpu().double().numpy(),
                             self.scale_table.cpu().numpy())

    @property
    def index_dtype(self) -> np.dtype:
        """The smallest integer type that holds every table index (one byte for 64 scales)."""
        return np.min_scalar_type(len(self.scale_table) - 1)

    @staticmethod
    def symbols(y: torch.Tensor, means=None) -> torch.Tensor:
        """The integers coded for ``y``: ``round(y - means)``, int64 (on y's device)."""
        offset = means if means is not None else 0.0
        return torch.round(y.detach() - offset).long()

    def compress(self, y: torch.Tensor, scales: torch.Tensor, means=None) -> bytes:
        symbols = self.symbols(y, means).cpu().numpy()
        return fast.encode_with_indexes(symbols, self.indexes(scales), self.table())

    def decompress(self, data: bytes, scales: torch.Tensor, means=None) -> torch.Tensor:
        symbols = fast.decode_with_indexes(data, self.indexes(scales), self.table())
        y_hat = torch.from_numpy(symbols).to(scales.dtype).to(scales.device)
        return y_hat + means if means is not None else y_hat
