"""Benchmark notebook 08's two CNNs around JPEG on Kodak: the quality predictor and the filter.

    python benchmarks/cnn_jpeg_kodak.py [--images N] [--out FILE]

**Quality predictor** (:func:`course_lib.cnn_jpeg.predict_quality`: plain, reading a quarter
of the macroblocks; ``every=1``, reading all of them; and with ``probe=True``) against the
exact answer (:func:`course_lib.cnn_jpeg.bisect_quality`, the smallest quality 1..95 that
reaches the target)
at target PSNRs of 30, 32, 34 and 36 dB (PSNR-RGB on 8 bits): the PSNR the chosen quality
really gives, its error against the target, the share of images within ±0.5 dB, the file size
against bisection's file, and the time to choose the quality (median over images after one
warm-up, one thread).

**Post-filter** (:func:`course_lib.cnn_jpeg.filter_jpeg`) on JPEG 4:2:0 ``optimize=True`` at
the benchmark's qualities 5…95: PSNR before and after per quality (the bytes do not change),
BD-rate of "JPEG + filter" against plain JPEG over the whole range (``course_lib.bench``),
the filter's time per image against JPEG's decode time, and where it fails: the smallest
per-image gain at each quality, the gain on the luma and on the chroma (YCbCr, BT.601), and
the gain on a synthetic page of black text on white.

The report is printed and written to ``--out`` (default
``benchmarks/results/cnn_jpeg_kodak.txt``) with the numbers as JSON next to it (``.json``),
which notebook 08 reads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from course_lib import bench, cnn_jpeg, datasets, images
from course_lib.codecs import classical

DEFAULT_OUT = Path(__file__).parent / "results" / "cnn_jpeg_kodak.txt"
TARGETS = (30.0, 32.0, 34.0, 36.0)
QUALITIES = classical.get_codec("jpeg").settings


def timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - start


def _errors(rows: list[dict], method: str, target: float) -> dict:
    error = np.array([row[f"psnr_{method}"] - target for row in rows])
    ratio = np.array([row[f"bytes_{method}"] / row["bytes_bisect"] for row in rows])
    return {"within_0.5_db": float(np.mean(np.abs(error) <= 0.5)),
            "target_met": float(np.mean(error >= 0)),
            "mean_error_db": float(error.mean()),
            "mean_abs_error_db": float(np.abs(error).mean()),
            "max_abs_error_db": float(np.abs(error).max()),
            "mean_quality_difference": float(np.mean([row[f"q_{method}"] - row["q_bisect"]
                                                      for row in rows])),
            "mean_bytes_ratio": float(ratio.mean())}


def predictor_run(kodak: list[np.ndarray], targets=TARGETS) -> dict:
    """Predicted (plain, and with one probe) against bisected quality for every image and
    target. The plain predictor's numbers are at the top level of each target's entry, the
    probe's under ``"probe"``."""
    model = cnn_jpeg.load_predictor()
    cnn_jpeg.predict_quality(kodak[0], targets[0], model)  # warm-up
    cnn_jpeg.predict_quality(kodak[0], targets[0], model, True)
    cnn_jpeg.predict_quality(kodak[0], targets[0], model, False, 1)
    cnn_jpeg.bisect_quality(kodak[0], targets[0])
    per_target = {}
    for target in targets:
        rows = []
        for image in kodak:
            row = {}
            for method, function, args in (
                    ("bisect", cnn_jpeg.bisect_quality, ()),
                    ("predict", cnn_jpeg.predict_quality, (model,)),
                    ("all", cnn_jpeg.predict_quality, (model, False, 1)),
                    ("probe", cnn_jpeg.predict_quality, (model, True))):
                quality, seconds = timed(function, image, target, *args)
                psnr, size = cnn_jpeg.jpeg_psnr(image, quality)
                row |= {f"q_{method}": quality, f"psnr_{method}": psnr,
                        f"bytes_{method}": size, f"time_{method}_s": seconds}
            rows.append(row)
        per_target[f"{target:g}"] = {
            **_errors(rows, "predict", target),
            "all": _errors(rows, "all", target),
            "probe": _errors(rows, "probe", target),
            "bisection_mean_excess_db": float(np.mean([row["psnr_bisect"] - target
                                                       for row in rows])),
            "images": rows,
        }
    times = {name: float(np.median([row[f"time_{name}_s"] for entry in per_target.values()
                                    for row in entry["images"]]))
             for name in ("bisect", "predict", "all", "probe")}
    within = [entry["within_0.5_db"] for entry in per_target.values()]
    within_all = [entry["all"]["within_0.5_db"] for entry in per_target.values()]
    within_probe = [entry["probe"]["within_0.5_db"] for entry in per_target.values()]
    return {"targets": list(targets), "per_target": per_target,
            "within_0.5_db_all": float(np.mean(within)),
            "within_0.5_db_all_every_1": float(np.mean(within_all)),
            "within_0.5_db_all_probe": float(np.mean(within_probe)),
            "median_time_bisect_s": times["bisect"], "median_time_predict_s": times["predict"],
            "median_time_all_s": times["all"], "median_time_probe_s": times["probe"],
            "speedup": times["bisect"] / times["predict"],
            "speedup_all": times["bisect"] / times["all"],
            "speedup_probe": times["bisect"] / times["probe"]}


def _ycbcr_psnr(original: np.ndarray, decoded: np.ndarray) -> list[float]:
    difference = images.rgb_to_ycbcr(original) - images.rgb_to_ycbcr(decoded)
    mse = (difference**2).reshape(-1, 3).mean(axis=0)
    return [float(10 * np.log10(255.0**2 / value)) for value in mse]


def filter_run(kodak: list[np.ndarray], qualities=QUALITIES) -> dict:
    """Plain JPEG against JPEG + filter at every quality, per image."""
    model = cnn_jpeg.load_filter()
    cnn_jpeg.filter_jpeg(classical.decode(classical.encode(kodak[0], "jpeg", 50)), 50, model)
    rows = []
    for quality in qualities:
        for index, image in enumerate(kodak):
            data = classical.encode(image, "jpeg", quality)
            decoded, decode_s = timed(classical.decode, data)
            repaired, filter_s = timed(cnn_jpeg.filter_jpeg, decoded, quality, model)
            rows.append({
                "quality": quality, "image": index, "bytes": len(data),
                "bpp": 8 * len(data) / (image.shape[0] * image.shape[1]),
                "psnr_jpeg": cnn_jpeg.psnr_uint8(image, decoded),
                "psnr_filtered": cnn_jpeg.psnr_uint8(image, repaired),
                "ycbcr_jpeg": _ycbcr_psnr(image, decoded),
                "ycbcr_filtered": _ycbcr_psnr(image, repaired),
                "decode_s": decode_s, "filter_s": filter_s})
    curves = {"quality": list(qualities)}
    for name in ("bpp", "psnr_jpeg", "psnr_filtered"):
        curves[name] = [float(np.mean([row[name] for row in rows if row["quality"] == q]))
                        for q in qualities]
    gains = [[row["psnr_filtered"] - row["psnr_jpeg"] for row in rows if row["quality"] == q]
             for q in qualities]
    channel_gain = [
        [float(np.mean([row["ycbcr_filtered"][c] - row["ycbcr_jpeg"][c]
                        for row in rows if row["quality"] == q])) for c in range(3)]
        for q in qualities]
    bd = bench.bd_rate(curves["bpp"], curves["psnr_jpeg"], curves["bpp"], curves["psnr_filtered"])
    low = [i for i, q in enumerate(qualities) if q <= 50]
    bd_low = bench.bd_rate(*[[curves[n][i] for i in low] for n in ("bpp", "psnr_jpeg")],
                           *[[curves[n][i] for i in low] for n in ("bpp", "psnr_filtered")])
    return {
        **curves, "gain_db": [float(np.mean(g)) for g in gains],
        "min_gain_db": [float(np.min(g)) for g in gains],
        "images_worse": [int(np.sum(np.array(g) < 0)) for g in gains],
        "gain_ycbcr_db": channel_gain,
        "bd_rate": bd, "bd_rate_q5_50": bd_low,
        "median_filter_s": float(np.median([row["filter_s"] for row in rows])),
        "median_decode_s": float(np.median([row["decode_s"] for row in rows])),
        "images": rows,
    }


def text_run(qualities=(10, 30, 50, 70, 90)) -> dict:
    page = cnn_jpeg.text_page()
    model = cnn_jpeg.load_filter()
    gains = {}
    for quality in qualities:
        decoded = classical.decode(classical.encode(page, "jpeg", quality))
        repaired = cnn_jpeg.filter_jpeg(decoded, quality, model)
        gains[str(quality)] = (cnn_jpeg.psnr_uint8(page, repaired)
                               - cnn_jpeg.psnr_uint8(page, decoded))
    return {"gain_db": gains}


def report(results: dict) -> str:
    predictor, post, text = results["predictor"], results["filter"], results["text"]
    lines = [
        f"CNN + JPEG on Kodak ({results['images']} images), {results['machine']}",
        "JPEG: Pillow 4:2:0, optimize=True. PSNR: RGB, 8 bits, per image.",
        "",
        "Quality predictor vs bisection (exact, 1..95): plain (one CNN pass over a quarter of the",
        "macroblocks + interpolation), all (the CNN over every macroblock) and with one probe",
        "(plain + one JPEG at the predicted quality, the curve shifted by its error)",
        f"{'target':>7} {'mode':>6} {'within ±0.5 dB':>15} {'target met':>11} {'mean err':>9} "
        f"{'mean |err|':>11} {'max |err|':>10} {'bisect excess':>14} {'bytes/bisect':>13}",
    ]
    for target, entry in predictor["per_target"].items():
        for mode, stats in (("plain", entry), ("all", entry["all"]), ("probe", entry["probe"])):
            lines.append(
                f"{target + ' dB':>7} {mode:>6} {stats['within_0.5_db']:>15.0%} "
                f"{stats['target_met']:>11.0%} {stats['mean_error_db']:>+9.2f} "
                f"{stats['mean_abs_error_db']:>11.2f} {stats['max_abs_error_db']:>10.2f} "
                f"{entry['bisection_mean_excess_db']:>+14.2f} {stats['mean_bytes_ratio']:>13.3f}")
    lines += [
        f"all targets: plain {predictor['within_0.5_db_all']:.1%}, all macroblocks "
        f"{predictor['within_0.5_db_all_every_1']:.1%}, with one probe "
        f"{predictor['within_0.5_db_all_probe']:.1%} within ±0.5 dB",
        f"time to choose the quality (median, 1 thread): bisection "
        f"{1e3 * predictor['median_time_bisect_s']:.1f} ms, plain "
        f"{1e3 * predictor['median_time_predict_s']:.1f} ms ({predictor['speedup']:.1f}x "
        f"faster), all macroblocks {1e3 * predictor['median_time_all_s']:.1f} ms "
        f"({predictor['speedup_all']:.1f}x), one probe "
        f"{1e3 * predictor['median_time_probe_s']:.1f} ms "
        f"({predictor['speedup_probe']:.1f}x faster)",
        "",
        "Post-filter on the decoded JPEG (same bytes)",
        f"{'quality':>7} {'bpp':>6} {'JPEG dB':>8} {'filtered':>9} {'gain':>6} "
        f"{'min gain':>9} {'worse':>6} {'gain Y':>7} {'Cb':>6} {'Cr':>6}",
    ]
    for i, quality in enumerate(post["quality"]):
        y, cb, cr = post["gain_ycbcr_db"][i]
        lines.append(
            f"{quality:>7} {post['bpp'][i]:>6.3f} {post['psnr_jpeg'][i]:>8.2f} "
            f"{post['psnr_filtered'][i]:>9.2f} {post['gain_db'][i]:>+6.2f} "
            f"{post['min_gain_db'][i]:>+9.2f} {post['images_worse'][i]:>6} {y:>+7.2f} "
            f"{cb:>+6.2f} {cr:>+6.2f}")
    lines += [
        f"BD-rate of JPEG + filter vs JPEG, qualities {post['quality'][0]}..."
        f"{post['quality'][-1]}: {post['bd_rate']:+.1f} %  (qualities 5..50: "
        f"{post['bd_rate_q5_50']:+.1f} %)",
        f"time per image (median, 1 thread): JPEG decode {1e3 * post['median_decode_s']:.1f} "
        f"ms, filter {1e3 * post['median_filter_s']:.0f} ms "
        f"({post['median_filter_s'] / post['median_decode_s']:.0f}x the decode)",
        "text page (black on white, 384x256): gain "
        + ", ".join(f"q={q} {g:+.2f} dB" for q, g in text["gain_db"].items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24, help="first N Kodak images")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    kodak = [datasets.load_kodak(i) for i in range(1, args.images + 1)]
    start = time.perf_counter()
    results = {"images": len(kodak),
               "machine": f"{bench.cpu_name()}, 1 thread, torch {torch.__version__}, "
                          f"Python {platform.python_version()}, load average at the start "
                          f"{os.getloadavg()[0]:.1f}",
               "predictor": predictor_run(kodak), "filter": filter_run(kodak),
               "text": text_run()}
    results["seconds"] = time.perf_counter() - start
    text = report(results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
