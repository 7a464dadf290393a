"""Learned image codecs: factorized prior (Ballé et al. 2017/2018) and (mean–)scale
hyperprior (Ballé et al. 2018, Minnen et al. 2018), structured like CompressAI's
``models/google.py``.

Transforms and entropy models are separate modules:

* ``g_a`` / ``g_s``: analysis and synthesis transforms (image <-> latents ``y``), each four
  stride-2 convolutions with GDN / IGDN, so ``y`` has 1/16 of the image's height and width;
* ``h_a`` / ``h_s``: hyper-analysis and hyper-synthesis (``y`` <-> side information ``z``,
  another factor 4 smaller), predicting each latent's Gaussian scale (and mean);
* ``entropy_bottleneck`` (factorized prior of ``z``, or of ``y`` in the factorized model) and
  ``gaussian_conditional``.

``forward(x)`` is for training: ``x (N, 3, H, W)`` in [0, 1] with H, W multiples of
:attr:`~CompressionModel.multiple` gives ``{"x_hat": (N, 3, H, W), "likelihoods": {...}}``.
``compress(x)`` / ``decompress(strings, shape)`` produce and read real bytes.

Determinism: the decoder must pick exactly the CDF table the encoder picked for every latent.
Those choices depend on the scales computed by ``h_s``, so both sides compute ``h_s`` on the
CPU in float64 from the integer-valued ``z_hat``; differences between thread counts or devices
(around 1e-15 relative) are then far too small to move a scale across one of the table's
boundaries (geometric midpoints between its scales, which are 13 % apart).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from .entropy_models import EntropyBottleneck, GaussianConditional, quantize
from .layers import GDN, conv, deconv


def analysis_transform(n: int, m: int) -> nn.Sequential:
    """(B, 3, H, W) -> (B, m, H/16, W/16)."""
    return nn.Sequential(conv(3, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m))


def synthesis_transform(n: int, m: int) -> nn.Sequential:
    """(B, m, h, w) -> (B, 3, 16h, 16w)."""
    return nn.Sequential(deconv(m, n), GDN(n, inverse=True), deconv(n, n), GDN(n, inverse=True),
                         deconv(n, n), GDN(n, inverse=True), deconv(n, 3))


class CompressionModel(nn.Module):
    """Shared plumbing: auxiliary loss, table updates, decoder-side quantisation mode."""

    multiple = 16  # H and W of the input must be multiples of this

    def __init__(self):
        super().__init__()
        # How the decoder sees y during training: "noise" (Ballé) or "ste" (rounded, with a
        # straight-through gradient; Minnen & Singh 2020). The rate always uses noise.
        self.decoder_quantization = "noise"

    def aux_loss(self) -> torch.Tensor:
        """Sum of the entropy bottlenecks' quantile losses (optimised separately)."""
        return sum(m.loss() for m in self.modules() if isinstance(m, EntropyBottleneck))

    def update(self, force: bool = False) -> bool:
        """Rebuild stale CDF tables (coding and saving do this automatically)."""
        results = [m.update(force) for m in self.modules() if isinstance(m, EntropyBottleneck)]
        return any(results)

    def state_dict(self, *args, **kwargs):
        self.update()  # a saved model always carries tables that match its parameters
        return super().state_dict(*args, **kwargs)

    def _decoder_input(self, y: torch.Tensor, y_noisy: torch.Tensor, offset) -> torch.Tensor:
        if self.training and self.decoder_quantization == "ste":
            return quantize(y, "ste", offset)
        return y_noisy

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) RGB tensors, got {tuple(x.shape)}")
        if x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise ValueError(f"H and W must be multiples of {self.multiple}, got "
                             f"{tuple(x.shape[-2:])}; pad with course_lib.images.pad_to_multiple")


def _check_single_rate(rate) -> None:
    if rate not in (None, 0):
        raise ValueError("this model has a single rate; rate must be None or 0")


class FactorizedPrior(CompressionModel):
    """Ballé et al. (2018) "factorized prior": y is coded with a per-channel learned density."""

    def __init__(self, n: int = 128, m: int = 192):
        super().__init__()
        self.n, self.m = n, m
        self.g_a = analysis_transform(n, m)
        self.g_s = synthesis_transform(n, m)
        self.entropy_bottleneck = EntropyBottleneck(m)

    def forward(self, x: torch.Tensor) -> dict:
        self._check_input(x)
        y = self.g_a(x)
        y_noisy, y_likelihoods = self.entropy_bottleneck(y)
        medians = self.entropy_bottleneck.medians.view(1, -1, 1, 1)
        x_hat = self.g_s(self._decoder_input(y, y_noisy, medians))
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods}}

    @torch.no_grad()
    def compress(self, x: torch.Tensor, rate=None) -> dict:
        """``rate`` is accepted (None or 0) so the file container treats every model alike."""
        _check_single_rate(rate)
        self._check_input(x)
        y = self.g_a(x)
        return {"strings": [self.entropy_bottleneck.compress(y)], "shape": tuple(y.shape[-2:])}

    @torch.no_grad()
    def decompress(self, strings: list[bytes], shape, rate=None) -> torch.Tensor:
        _check_single_rate(rate)
        if len(strings) != 1:
            raise ValueError("a factorized-prior stream has one part (y)")
        y_hat = self.entropy_bottleneck.decompress(strings[0], (1, self.m, *shape))
        device = next(self.parameters()).device
        return self.g_s(y_hat.to(device)).clamp(0, 1)


class ScaleHyperprior(CompressionModel):
    """Ballé et al. (2018) scale hyperprior: side information z predicts each latent's scale.

    With ``num_rates > 1`` one model covers several rate points: each rate ``q`` has a learned
    per-channel gain applied to ``y`` before quantisation and its inverse after (the "gain
    units" of Cui et al. 2021). Larger gains mean finer quantisation, more bits, less error.
    Fractional rates interpolate the gains geometrically, so any rate in between is available.
    Methods take ``rate``: a number in ``[0, num_rates - 1]`` or, in training, a ``(B,)``
    tensor of integer rate indexes (one per image).
    """

    multiple = 64

    def __init__(self, n: int = 128, m: int = 192, num_rates: int = 1):
        super().__init__()
        self.n, self.m, self.num_rates = n, m, num_rates
        if num_rates > 1:
            # log-gains spread so the initial rates already differ (about 2x per step)
            spread = torch.linspace(-1.0, 1.0, num_rates).view(-1, 1) * (num_rates - 1) * 0.35
            self.log_gain = nn.Parameter(spread.repeat(1, m))
            self.log_inverse_gain = nn.Parameter(-spread.repeat(1, m))
        self.g_a = analysis_transform(n, m)
        self.g_s = synthesis_transform(n, m)
        self.h_a = nn.Sequential(conv(m, n, 3, 1), nn.ReLU(inplace=True), conv(n, n),
                                 nn.ReLU(inplace=True), conv(n, n))
        self.h_s = nn.Sequential(deconv(n, n), nn.ReLU(inplace=True), deconv(n, n),
                                 nn.ReLU(inplace=True), conv(n, m, 3, 1), nn.ReLU(inplace=True))
        self.entropy_bottleneck = EntropyBottleneck(n)
        self.gaussian_conditional = GaussianConditional()

    def _entropy_parameters(self, hyper: torch.Tensor):
        """Split h_s's output into (scales, means); means are None for the scale-only model."""
        return hyper, None

    def _gains(self, rate) -> tuple[torch.Tensor, torch.Tensor] | tuple[float, float]:
        """(gain, inverse gain) broadcastable to y: ``(1 or B, M, 1, 1)``, or 1.0 each."""
        if self.num_rates == 1:
            _check_single_rate(rate)
            return 1.0, 1.0
        if rate is None:
            raise ValueError(f"this model covers {self.num_rates} rates: pass rate=0.."
                             f"{self.num_rates - 1}")
        if isinstance(rate, torch.Tensor):
            index = rate.long().to(self.log_gain.device)
            return (self.log_gain[index].exp()[..., None, None],
                    self.log_inverse_gain[index].exp()[..., None, None])
        rate = float(rate)
        if not 0 <= rate <= self.num_rates - 1:
            raise ValueError(f"rate must lie in [0, {self.num_rates - 1}], got {rate}")
        low = min(int(rate), self.num_rates - 2)
        weight = rate - low
        def blend(table):
            return ((1 - weight) * table[low] + weight * table[low + 1]).exp().view(1, -1, 1, 1)
        return blend(self.log_gain), blend(self.log_inverse_gain)

    def _hyper_synthesis_float64(self, z_hat: torch.Tensor) -> torch.Tensor:
        """h_s on the CPU in float64: the same table choices on every machine."""
        params = {name: value.detach().cpu().double()
                  for name, value in self.h_s.state_dict().items()}
        return functional_call(self.h_s, params, (z_hat.detach().cpu().double(),))

    def _analysis(self, x: torch.Tensor, rate):
        """(y scaled by the rate's gain, z)."""
        gain, _ = self._gains(rate)
        y = self.g_a(x) * gain
        return y, self.h_a(torch.abs(y) if self._hyper_takes_abs else y)

    def forward(self, x: torch.Tensor, rate=None) -> dict:
        self._check_input(x)
        y, z = self._analysis(x, rate)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self._entropy_parameters(self.h_s(z_hat))
        y_noisy, y_likelihoods = self.gaussian_conditional(y, scales, means)
        offset = means if means is not None else 0.0
        _, inverse_gain = self._gains(rate)
        x_hat = self.g_s(self._decoder_input(y, y_noisy, offset) * inverse_gain)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    _hyper_takes_abs = True  # the scale model only needs |y|

    @torch.no_grad()
    def compress(self, x: torch.Tensor, rate=None) -> dict:
        self._check_input(x)
        y, z = self._analysis(x, rate)
        z_string = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_string, z.shape)
        scales, means = self._entropy_parameters(self._hyper_synthesis_float64(z_hat))
        y_string = self.gaussian_conditional.compress(y.cpu().double(), scales, means)
        return {"strings": [y_string, z_string], "shape": tuple(z.shape[-2:])}

    @torch.no_grad()
    def decompress(self, strings: list[bytes], shape, rate=None) -> torch.Tensor:
        if len(strings) != 2:
            raise ValueError("a hyperprior stream has two parts (y and z)")
        z_hat = self.entropy_bottleneck.decompress(strings[1], (1, self.n, *shape))
        scales, means = self._entropy_parameters(self._hyper_synthesis_float64(z_hat))
        y_hat = self.gaussian_conditional.decompress(strings[0], scales, means)
        parameter = next(self.parameters())
        _, inverse_gain = self._gains(rate)
        return self.g_s(y_hat.to(parameter) * inverse_gain).clamp(0, 1)

    def latents(self, x: torch.Tensor, rate=None) -> dict:
        """Integer symbols of y and z as the encoder codes them (for tests and notebooks)."""
        with torch.no_grad():
            y, z = self._analysis(x, rate)
            medians = self.entropy_bottleneck.medians.view(1, -1, 1, 1)
            z_hat = torch.round(z - medians) + medians
            scales, means = self._entropy_parameters(self._hyper_synthesis_float64(z_hat))
            offset = means if means is not None else 0.0
            y_symbols = torch.round(y.cpu().double() - offset).long()
            return {"y": y_symbols, "z": torch.round(z - medians).long(),
                    "indexes": torch.from_numpy(self.gaussian_conditional.indexes(scales))}


class MeanScaleHyperprior(ScaleHyperprior):
    """Minnen et al. (2018) without context model: the hyperprior predicts means and scales."""

    _hyper_takes_abs = False

    def __init__(self, n: int = 128, m: int = 192, num_rates: int = 1):
        super().__init__(n, m, num_rates)
        self.h_a = nn.Sequential(conv(m, n, 3, 1), nn.LeakyReLU(inplace=True), conv(n, n),
                                 nn.LeakyReLU(inplace=True), conv(n, n))
        self.h_s = nn.Sequential(deconv(n, m), nn.LeakyReLU(inplace=True),
                                 deconv(m, m * 3 // 2), nn.LeakyReLU(inplace=True),
                                 conv(m * 3 // 2, 2 * m, 3, 1))

    def _entropy_parameters(self, hyper: torch.Tensor):
        scales, means = hyper.chunk(2, dim=1)
        return scales, means


def split_parameters(model: nn.Module) -> tuple[list, list]:
    """(main parameters, the entropy bottleneck's quantiles): the two optimisers' shares."""
    main, quantiles = [], []
    for name, parameter in model.named_parameters():
        (quantiles if name.endswith("quantiles") else main).append(parameter)
    return main, quantiles


MODELS = {"factorized": FactorizedPrior, "hyperprior": ScaleHyperprior,
          "mean-scale": MeanScaleHyperprior}


def rate_bits(likelihoods: dict) -> torch.Tensor:
    """Estimated code length of each image, ``-sum log2 likelihood`` over its latents: (B,)."""
    return sum(-torch.log2(lik).flatten(1).sum(dim=1) for lik in likelihoods.values())


LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)  # CompressAI, MSE


class RateDistortionLoss(nn.Module):
    """``loss = bpp + lmbda * 255² * MSE``, the Lagrangian of rate–distortion training.

    ``lmbda`` values as in CompressAI's MSE models (:data:`LAMBDAS`, 0.0018 … 0.18) span
    roughly 0.1–2 bpp. ``lmbda`` may be a ``(B,)`` tensor, one trade-off per image (for
    variable-rate training); the loss is then the batch mean of the per-image Lagrangians.
    """

    def __init__(self, lmbda: float = 0.0067):
        super().__init__()
        self.lmbda = lmbda

    def forward(self, output: dict, target: torch.Tensor, lmbda=None) -> dict:
        lmbda = self.lmbda if lmbda is None else lmbda
        height, width = target.shape[-2:]
        bpp = rate_bits(output["likelihoods"]) / (height * width)  # (B,)
        mse = ((output["x_hat"] - target) ** 2).flatten(1).mean(dim=1)  # (B,)
        loss = (bpp + lmbda * 255**2 * mse).mean()
        return {"loss": loss, "bpp": bpp.mean(), "mse": mse.mean()}
