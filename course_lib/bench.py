"""Rate–distortion runs over an image set, and the Bjøntegaard delta rate (BD-rate).

Curves follow the convention of CompressAI's published results: for each codec setting, the
bpp (from real bytes) and the PSNR are measured per image and then averaged over the set.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator

from .codecs import classical


@dataclass
class RDPoint:
    """One codec setting averaged over an image set."""

    codec: str
    setting: float | None
    bpp: float
    psnr: float
    ms_ssim: float
    encode_s: float  # median over images
    decode_s: float
    images: int


def classical_rd_curve(images, codec: str, settings=None) -> list[RDPoint]:
    """Run a Pillow codec on every image at every setting; average per setting."""
    spec = classical.get_codec(codec)
    settings = spec.settings if settings is None else settings
    points = []
    for setting in settings:
        results = [classical.evaluate(image, codec, setting) for image in images]
        points.append(RDPoint(
            codec, setting,
            bpp=float(np.mean([r.bpp for r in results])),
            psnr=float(np.mean([r.psnr for r in results])),
            ms_ssim=float(np.mean([r.ms_ssim for r in results])),
            encode_s=float(np.median([r.encode_s for r in results])),
            decode_s=float(np.median([r.decode_s for r in results])),
            images=len(results)))
    return points


class NoOverlapError(ValueError):
    """Two rate–distortion curves share no PSNR range, so their BD-rate is undefined."""


def bd_rate(reference_bpp, reference_psnr, test_bpp, test_psnr) -> float:
    """Average rate difference of ``test`` against ``reference`` at equal quality, in percent.

    Bjøntegaard's method with piecewise-cubic Hermite (pchip) interpolation of log-rate as a
    function of PSNR, integrated over the PSNR range both curves cover. Negative numbers mean
    the test codec needs fewer bits.
    """
    curves = []
    for rates, quality in ((reference_bpp, reference_psnr), (test_bpp, test_psnr)):
        rates, quality = np.asarray(rates, float), np.asarray(quality, float)
        if len(rates) < 2 or len(rates) != len(quality):
            raise ValueError("each curve needs at least two (bpp, PSNR) points of equal count")
        if np.any(rates <= 0) or not np.all(np.isfinite(quality)):
            raise ValueError("rates must be positive and PSNRs finite (no lossless points)")
        order = np.argsort(quality)
        if np.any(np.diff(quality[order]) <= 0):
            raise ValueError("PSNR values of a curve must be distinct")
        curves.append((quality[order], np.log(rates[order])))
    low = max(curves[0][0][0], curves[1][0][0])
    high = min(curves[0][0][-1], curves[1][0][-1])
    if low >= high:
        raise NoOverlapError("the two curves do not overlap in PSNR; BD-rate is undefined")
    integrals = []
    for quality, log_rate in curves:
        antiderivative = PchipInterpolator(quality, log_rate).antiderivative()
        integrals.append((antiderivative(high) - antiderivative(low)) / (high - low))
    return float((np.exp(integrals[1] - integrals[0]) - 1) * 100)


def bd_rate_matrix(curves: dict) -> dict[tuple[str, str], float]:
    """:func:`bd_rate` of every curve against every other one.

    ``curves`` maps a name to ``(bpp, psnr)`` sequences; the result maps ``(test, reference)``
    to the BD-rate of ``test`` against ``reference`` in percent, NaN where the two curves do not
    overlap in PSNR. Any other problem with a curve raises, as in :func:`bd_rate`.
    """
    table = {}
    for test, (test_bpp, test_psnr) in curves.items():
        for reference, (reference_bpp, reference_psnr) in curves.items():
            if test == reference:
                continue
            try:
                table[test, reference] = bd_rate(reference_bpp, reference_psnr,
                                                  test_bpp, test_psnr)
            except NoOverlapError:
                table[test, reference] = float("nan")
    return table


def cpu_name() -> str:
    """The CPU's model name as benchmark reports state it (the machine type if unknown)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()
