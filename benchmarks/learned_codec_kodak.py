"""Benchmark the shipped learned codec on Kodak against the anchor codecs, in one run.

    python benchmarks/learned_codec_kodak.py [--weights FILE] [--images N] [--efforts 0 1 2]
        [--codecs jpeg webp avif jxl [jpeg2000]] [--out FILE]

For every rate setting of the model and every Kodak image: encode to a real file, measure its
bytes (bpp), decode, PSNR on 8-bit RGB, MS-SSIM, and the rate the model estimates from its
likelihoods; the encode and decode times are split by stage (each transform, and the entropy
coding with the rest of the work). The anchor codecs, set up as BENCHMARK_CONVENTIONS.md asks
(JPEG 4:2:0 with optimize=True, WebP method=6, AVIF speed=4, JPEG XL effort=7, each at
qualities 5..95; JPEG 2000 only when --codecs names it), are measured on the same images in
the same run. Curves are averaged over the images per setting (CompressAI's convention);
BD-rates of every codec against every other use pchip over the overlapping PSNR range. Times
are wall-clock per image after one warm-up, medians over images, with the threads stated.
``--efforts 0 1 2`` measures the learned codec at each effort level (the encoder's search for
latents, course_lib.refine) as curves of their own: "learned" (0), "learned-e1", "learned-e2".
The report for the repository: --out benchmarks/results/learned_codec_kodak.txt (which also
writes the curves, BD-rates and learned-codec rows as learned_codec_kodak.json beside it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from course_lib import bench, datasets, metrics
from course_lib.codecs import classical, learned
from course_lib.images import pad_to_multiple, to_tensor
from course_lib.models import rate_bits

ANCHORS = ("jpeg", "webp", "avif", "jxl", "jpeg2000")
DEFAULT_ANCHORS = ("jpeg", "webp", "avif", "jxl")
TRANSFORMS = ("g_a", "h_a", "h_s", "g_s")  # the model's modules, timed where it has them


@contextlib.contextmanager
def stage_clock(model, names):
    """Seconds spent inside each named submodule of ``model`` while the block runs."""
    spent, started = dict.fromkeys(names, 0.0), {}

    def hooks(name):
        def start(*_):
            started[name] = time.perf_counter()

        def stop(*_):
            spent[name] += time.perf_counter() - started[name]

        return start, stop

    handles = []
    for name in names:
        start, stop = hooks(name)
        modules = [getattr(model, name)]
        if name == "h_s" and hasattr(model, "h_s_float64"):
            modules.append(model.h_s_float64())  # the float64 copy that chooses the tables
        for module in modules:
            handles += [module.register_forward_pre_hook(start),
                        module.register_forward_hook(stop)]
    try:
        yield spent
    finally:
        for handle in handles:
            handle.remove()


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def measure(loaded, images, quality, stages, effort=0):
    """Means (rates, quality) and medians (times, keys ending in ``_s``) over the images."""
    rows = []
    model = loaded.model

    def encode(image):
        return learned.compress_image(image, quality, loaded, effort=effort)

    for image in images:
        with stage_clock(model, stages) as encode_stages:
            data, encode_s = timed(encode, image)
        with stage_clock(model, stages) as decode_stages:
            decoded, decode_s = timed(learned.decompress_image, data, loaded)
        height, width = image.shape[:2]
        x = to_tensor(image)
        padded, _ = pad_to_multiple(x, model.multiple)
        with torch.no_grad():  # (at effort 0: the latents of the file)
            rate = quality if getattr(model, "num_rates", 1) > 1 else None
            estimate = rate_bits(model(padded, rate)["likelihoods"]).item() / (height * width)
        y = to_tensor(decoded)
        row = {"bpp": metrics.bpp(len(data), height, width), "estimate": estimate,
               "psnr": metrics.psnr(x, y).item(), "ms_ssim": metrics.ms_ssim(x, y).item(),
               "encode_s": encode_s, "decode_s": decode_s}
        for phase, total, spent in (("encode", encode_s, encode_stages),
                                    ("decode", decode_s, decode_stages)):
            row.update({f"{phase}_{name}_s": seconds for name, seconds in spent.items()})
            row[f"{phase}_coding_s"] = total - sum(spent.values())
        rows.append(row)
    return {key: (np.median if key.endswith("_s") else np.mean)([r[key] for r in rows])
            for key in rows[0]}


def learned_tables(name, points, stages, effort=0) -> list[str]:
    searched = "" if effort == 0 else (f", effort {effort} (estimate: of the transforms' own "
                                       "latents, not the file's)")
    lines = [f"learned codec ({name}{searched}), by rate setting",
             f"{'setting':>7s} {'bpp':>6s} {'est.':>6s} {'gap%':>6s} {'PSNR':>6s} "
             f"{'MS-SSIM':>7s} {'enc s':>6s} {'dec s':>6s}"]
    for quality, r in enumerate(points):
        gap = 100 * (r["bpp"] - r["estimate"]) / r["estimate"]
        lines.append(f"{quality:7d} {r['bpp']:6.3f} {r['estimate']:6.3f} {gap:6.2f} "
                     f"{r['psnr']:6.2f} {r['ms_ssim']:7.4f} {r['encode_s']:6.3f} "
                     f"{r['decode_s']:6.3f}")
    columns = (*stages, "coding")
    lines += ["", "learned codec, time per image by stage in s, medians over images",
              "(coding = entropy coding and the rest: total minus the transforms; - = not run)",
              f"{'setting':>7s} {'phase':>6s} " + " ".join(f"{c:>6s}" for c in columns)
              + f" {'total':>6s}"]
    for quality, r in enumerate(points):
        for phase in ("encode", "decode"):
            cells = [r[f"{phase}_{c}_s"] for c in columns]
            lines.append(f"{quality:7d} {phase:>6s} "
                         + " ".join(f"{s:6.3f}" if s else f"{'-':>6s}" for s in cells)
                         + f" {r[f'{phase}_s']:6.3f}")
    return lines


def anchor_table(codec, points) -> list[str]:
    spec = classical.get_codec(codec)
    lines = [f"{spec.label}, by {spec.setting_name}",
             f"{'setting':>7s} {'bpp':>6s} {'PSNR':>6s} {'MS-SSIM':>7s} {'enc s':>6s} "
             f"{'dec s':>6s}"]
    lines += [f"{p.setting:7d} {p.bpp:6.3f} {p.psnr:6.2f} {p.ms_ssim:7.4f} {p.encode_s:6.3f} "
              f"{p.decode_s:6.3f}" for p in points]
    return lines


def bd_rate_lines(curves) -> list[str]:
    table = bench.bd_rate_matrix(curves)
    names = list(curves)
    lines = ["BD-rate in % of each row against each column: pchip over the overlapping PSNR",
             "range; negative = fewer bits at equal PSNR; n/a = no common PSNR range",
             f"{'':11s}" + "".join(f"{name:>11s}" for name in names)]
    for test in names:
        cells = ["-" if test == reference else "n/a" if math.isnan(table[test, reference])
                 else f"{table[test, reference]:+.1f}" for reference in names]
        lines.append(f"{test:11s}" + "".join(f"{cell:>11s}" for cell in cells))
    for name in (n for n in names if n.startswith("learned")):
        gaps = []
        for anchor in ("webp", "avif", "jxl"):
            if anchor in curves:
                label, value = classical.get_codec(anchor).label, table[name, anchor]
                gaps.append(f"no common PSNR range with {label}" if math.isnan(value) else
                            f"{abs(value):.1f} % {'more' if value > 0 else 'fewer'} bits than "
                            f"{label}")
        if gaps:
            lines += ["", f"{name} at equal PSNR (BD-rate): {'; '.join(gaps)}."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=None,
                        help="a weights file (default: the shipped model, checksum-verified)")
    parser.add_argument("--images", type=int, default=24, help="the first N Kodak images")
    parser.add_argument("--codecs", nargs="+", choices=ANCHORS, default=list(DEFAULT_ANCHORS),
                        help="anchor codecs (default: %(default)s; jpeg2000 on request)")
    parser.add_argument("--efforts", nargs="+", type=int, choices=[0, 1, 2], default=[0],
                        help="effort levels of the learned codec to measure (default: 0)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    if not 1 <= args.images <= 24:
        parser.error(f"--images must be 1..24 (Kodak has 24 images), got {args.images}")
    anchors = list(dict.fromkeys(args.codecs))
    loaded = learned.load_weights(args.weights) if args.weights else learned.load_shipped()
    loaded.model.eval()
    stages = [name for name in TRANSFORMS if hasattr(loaded.model, name)]
    images = [datasets.load_kodak(i) for i in range(1, args.images + 1)]
    started = time.perf_counter()
    learned.decompress_image(learned.compress_image(images[0], 0, loaded), loaded)  # warm-up
    efforts = list(dict.fromkeys(args.efforts))
    learned_points = {}
    for effort in efforts:
        learned_points[effort] = []
        for quality in range(getattr(loaded.model, "num_rates", 1)):
            learned_points[effort].append(measure(loaded, images, quality, stages, effort))
            print(f"learned codec, effort {effort}, setting {quality}: "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    anchor_points = {}
    for codec in anchors:
        classical.evaluate(images[0], codec, classical.get_codec(codec).settings[0])  # warm-up
        anchor_points[codec] = bench.classical_rd_curve(images, codec)
        print(f"{codec}: {time.perf_counter() - started:.0f} s", flush=True)

    cores = len(os.sched_getaffinity(0))
    lines = [f"Kodak, {len(images)} images, mean per setting; CPU "
             f"({platform.processor() or platform.machine()}, {cores} cores available)",
             f"threads: learned codec {torch.get_num_threads()} (torch), JPEG, WebP and "
             f"JPEG 2000 1, AVIF and JPEG XL {cores} (all cores)",
             f"weights: {loaded.name} sha256 {loaded.sha256[:16]}… config {loaded.config}",
             f"whole run: {time.perf_counter() - started:.0f} s", ""]
    for effort, points in learned_points.items():
        lines += [*learned_tables(loaded.name, points, stages, effort), ""]
    lines.pop()
    for codec, points in anchor_points.items():
        lines += ["", *anchor_table(codec, points)]
    if "jpeg2000" in anchor_points:
        lines += ["", "Note: JPEG 2000 here is OpenJPEG through Pillow (irreversible wavelet, "
                  "rate layers),", "which falls well short of published JPEG 2000 curves."]
    curves = {"learned" if effort == 0 else f"learned-e{effort}":
              ([r["bpp"] for r in points], [r["psnr"] for r in points])
              for effort, points in learned_points.items()}
    curves.update({codec: ([p.bpp for p in points], [p.psnr for p in points])
                   for codec, points in anchor_points.items()})
    lines += ["", *bd_rate_lines(curves)]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
        # the same curves for notebooks and plots: OUT with the suffix .json
        table = bench.bd_rate_matrix(curves)
        args.out.with_suffix(".json").write_text(json.dumps({
            "images": len(images), "weights": loaded.name, "sha256": loaded.sha256,
            "curves": {name: {"bpp": list(map(float, bpp)), "psnr": list(map(float, psnr))}
                       for name, (bpp, psnr) in curves.items()},
            "bd_rate": {test: {reference: None if math.isnan(table[test, reference])
                               else float(table[test, reference])
                               for reference in curves if reference != test}
                        for test in curves},
            "learned": {("learned" if effort == 0 else f"learned-e{effort}"):
                        [{key: float(value) for key, value in row.items()} for row in points]
                        for effort, points in learned_points.items()},
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
