"""Benchmark the lossless codecs on Kodak in one run: PNG, WebP, JPEG XL and the course's coders.

    python benchmarks/lossless_kodak.py [--images N] [--out FILE]

For every Kodak image and codec: encode to a real file, decode it, check that the pixels come
back bit for bit, and measure bits per subpixel (``8 * bytes / (H * W * 3)``, headers included)
and the wall-clock encode and decode times. The anchors are set up as BENCHMARK_CONVENTIONS.md
asks: PNG with ``optimize=True``, WebP lossless with ``method=6, quality=100`` (its slowest,
smallest setting), JPEG XL lossless with ``effort=7`` (when ``pillow-jxl-plugin`` is installed),
all through :mod:`course_lib.codecs.classical`; the course's coders are the predictive one,
:mod:`course_lib.codecs.lossless`, and the learned one, :mod:`course_lib.codecs.lossless_learned`
(shipped model), both with their defaults, and the learned one also without the encoder's fit
of its last layers to each image (``adapt=False``, what it wrote before that fit existed).
Times follow one warm-up per codec; the
table gives the mean and the median over images. The report is printed and written to
``--out`` (default ``benchmarks/results/lossless_kodak.txt``), the numbers also as JSON beside
it (``.json``: what notebook 09 reads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from course_lib import datasets
from course_lib.codecs import classical, lossless, lossless_learned

DEFAULT_OUT = Path(__file__).parent / "results" / "lossless_kodak.txt"


def classical_codec(name: str) -> tuple[Callable, Callable]:
    return (lambda image: classical.encode(image, name)), classical.decode


CODECS = {
    "PNG (optimize)": classical_codec("png"),
    "WebP lossless (method 6)": classical_codec("webp_lossless"),
    "JPEG XL lossless (effort 7)": classical_codec("jxl_lossless"),
    "course predictive coder": (lossless.compress_lossless, lossless.decompress_lossless),
    "course learned coder, no fit": (
        lambda image: lossless_learned.compress_learned(image, adapt=False),
        lossless_learned.decompress_learned),
    "course learned coder": (lossless_learned.compress_learned,
                             lossless_learned.decompress_learned),
}
SHORT = {"PNG (optimize)": "PNG", "WebP lossless (method 6)": "WebP lossless",
         "JPEG XL lossless (effort 7)": "JPEG XL lossless",
         "course predictive coder": "course LLCC",
         "course learned coder, no fit": "learned, no fit",
         "course learned coder": "course learned"}


def jpeg_xl_available() -> bool:
    try:
        import pillow_jxl  # noqa: F401
    except ImportError:
        return False
    return True


def measure(encode: Callable, decode: Callable, image: np.ndarray) -> dict:
    start = time.perf_counter()
    data = encode(image)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode(data)
    decode_s = time.perf_counter() - start
    if decoded.shape != image.shape or not np.array_equal(decoded, image):
        raise AssertionError("the decoded image differs from the original: not lossless")
    return {"bpsp": 8 * len(data) / image.size, "encode_s": encode_s, "decode_s": decode_s}


def report(results: dict[str, list[dict]], names: list[str], header: list[str]) -> str:
    lines = [*header,
             f"{'codec':29s} {'bpsp':>6s} {'vs PNG':>7s} {'enc s mean':>10s} {'median':>7s} "
             f"{'dec s mean':>10s} {'median':>7s}"]
    png = np.mean([r["bpsp"] for r in results["PNG (optimize)"]])
    for codec, rows in results.items():
        bpsp = np.mean([r["bpsp"] for r in rows])
        encode = [r["encode_s"] for r in rows]
        decode = [r["decode_s"] for r in rows]
        lines.append(f"{codec:29s} {bpsp:6.3f} {100 * (bpsp / png - 1):+6.1f}% "
                     f"{np.mean(encode):10.3f} {np.median(encode):7.3f} "
                     f"{np.mean(decode):10.3f} {np.median(decode):7.3f}")
    lines += ["", "bits per subpixel by image",
              f"{'image':>8s}" + "".join(f"{SHORT[c]:>18s}" for c in results)]
    for index, name in enumerate(names):
        lines.append(f"{name:>8s}" + "".join(f"{results[c][index]['bpsp']:18.3f}"
                                             for c in results))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="the first N Kodak images")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="write the report here")
    args = parser.parse_args()
    if not 1 <= args.images <= 24:
        parser.error(f"--images must be 1..24 (Kodak has 24 images), got {args.images}")
    torch.set_num_threads(1)
    codecs = dict(CODECS)
    skipped = []
    if not jpeg_xl_available():
        skipped.append("JPEG XL (pillow-jxl-plugin is not installed)")
        del codecs["JPEG XL lossless (effort 7)"]
    names = [f"kodim{i:02d}" for i in range(1, args.images + 1)]
    images = [datasets.load_kodak(i) for i in range(1, args.images + 1)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results = {}
    for codec, (encode, decode) in codecs.items():
        measure(encode, decode, images[0])  # warm-up
        results[codec] = [measure(encode, decode, image) for image in images]
        print(f"{codec}: {time.perf_counter() - started:.0f} s", flush=True)
    cores = len(os.sched_getaffinity(0))
    header = [
        f"Kodak, {len(images)} images (768 x 512 RGB), lossless, every file decoded and "
        "compared bit for bit",
        f"CPU ({platform.processor() or platform.machine()}, {cores} cores available; load "
        f"average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end); "
        "PNG, WebP and the course's coders use one thread, JPEG XL all cores",
        f"whole run: {time.perf_counter() - started:.0f} s; bpsp = bits per subpixel, mean "
        "over images; times per image after one warm-up",
    ]
    if skipped:
        header.append(f"not run: {'; '.join(skipped)}")
    text = report(results, names, [*header, ""])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    summary = {"images": names, "header": header, "codecs": {
        codec: {"bpsp": float(np.mean([r["bpsp"] for r in rows])),
                "encode_s_median": float(np.median([r["encode_s"] for r in rows])),
                "decode_s_median": float(np.median([r["decode_s"] for r in rows])),
                "decode_s_max": float(np.max([r["decode_s"] for r in rows])),
                "bpsp_by_image": [r["bpsp"] for r in rows]}
        for codec, rows in results.items()}}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
