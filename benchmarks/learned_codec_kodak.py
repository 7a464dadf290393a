"""Benchmark the shipped learned codec on Kodak against Pillow JPEG, in one run.

    python benchmarks/learned_codec_kodak.py [--weights FILE] [--images N] [--out FILE]

For every rate setting of the model and every Kodak image: encode to a real file, measure its
bytes (bpp), decode, PSNR on 8-bit RGB, MS-SSIM, and the rate the model estimates from its
likelihoods. JPEG (4:2:0, optimize=True, qualities 5..95) is measured on the same images in the
same run. Curves are averaged over the images per setting (CompressAI's convention); the
BD-rate against JPEG uses pchip interpolation over the overlapping PSNR range. Times are
wall-clock per image after one warm-up, medians over images, with the thread count printed.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from course_lib import bench, datasets, metrics
from course_lib.codecs import learned
from course_lib.images import pad_to_multiple, to_tensor
from course_lib.models import rate_bits


def measure(loaded, images, quality):
    rows = []
    model = loaded.model
    for image in images:
        start = time.perf_counter()
        data = learned.compress_image(image, quality, loaded)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        decoded = learned.decompress_image(data, loaded)
        decode_s = time.perf_counter() - start
        height, width = image.shape[:2]
        x = to_tensor(image)
        padded, _ = pad_to_multiple(x, model.multiple)
        with torch.no_grad():
            rate = quality if getattr(model, "num_rates", 1) > 1 else None
            estimate = rate_bits(model(padded, rate)["likelihoods"]).item() / (height * width)
        y = to_tensor(decoded)
        rows.append({"bpp": metrics.bpp(len(data), height, width), "estimate": estimate,
                     "psnr": metrics.psnr(x, y).item(), "ms_ssim": metrics.ms_ssim(x, y).item(),
                     "encode_s": encode_s, "decode_s": decode_s})
    return {key: (np.median if key.endswith("_s") else np.mean)([r[key] for r in rows])
            for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=None,
                        help="a weights file (default: the shipped model, checksum-verified)")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    model_eval = learned.load_weights(args.weights) if args.weights else learned.load_shipped()
    model_eval.model.eval()
    images = [datasets.load_kodak(i) for i in range(1, args.images + 1)]
    learned.compress_image(images[0], 0, model_eval)  # warm-up
    lines = [f"Kodak, {len(images)} images, mean per setting; {torch.get_num_threads()} torch "
             f"threads on {platform.processor() or platform.machine()}, CPU",
             f"weights: {model_eval.name} sha256 {model_eval.sha256[:16]}… "
             f"config {model_eval.config}", ""]
    header = f"{'codec':8s} {'setting':>7s} {'bpp':>6s} {'est.':>6s} {'gap%':>6s} " \
             f"{'PSNR':>6s} {'MS-SSIM':>7s} {'enc s':>6s} {'dec s':>6s}"
    lines.append(header)
    learned_points = []
    for quality in range(getattr(model_eval.model, "num_rates", 1)):
        r = measure(model_eval, images, quality)
        learned_points.append(r)
        gap = 100 * (r["bpp"] - r["estimate"]) / r["estimate"]
        lines.append(f"{'learned':8s} {quality:7d} {r['bpp']:6.3f} {r['estimate']:6.3f} "
                     f"{gap:6.2f} {r['psnr']:6.2f} {r['ms_ssim']:7.4f} {r['encode_s']:6.3f} "
                     f"{r['decode_s']:6.3f}")
        print(lines[-1], flush=True)
    jpeg = bench.classical_rd_curve(images, "jpeg")
    for p in jpeg:
        lines.append(f"{'jpeg':8s} {p.setting:7d} {p.bpp:6.3f} {'':6s} {'':6s} {p.psnr:6.2f} "
                     f"{p.ms_ssim:7.4f} {p.encode_s:6.3f} {p.decode_s:6.3f}")
    try:
        bd = bench.bd_rate([p.bpp for p in jpeg], [p.psnr for p in jpeg],
                           [r["bpp"] for r in learned_points], [r["psnr"] for r in learned_points])
        lines += ["", f"BD-rate of the learned codec against JPEG 4:2:0: {bd:+.1f} % "
                  "(negative = fewer bits at equal PSNR)"]
    except ValueError as error:
        lines += ["", f"BD-rate undefined: {error}"]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
