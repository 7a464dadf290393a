"""What tiling costs the learned codec on Kodak: bytes, pixels, BD-rate and time.

    python benchmarks/learned_codec_tiles.py [--tile PIXELS] [--images N] [--out FILE]

Kodak's 768 x 512 images fit in one default tile, so tiles are forced small (256 pixels:
3 x 2 tiles per image) and compared with the whole image at every rate setting of the shipped
model: identical files, pixels that differ, the curves averaged over the images (CompressAI's
convention) and the BD-rate of tiled against untiled (pchip, as in ``course_lib.bench``).
Times are wall-clock medians over the images, after one warm-up, with the thread count
printed.
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
from course_lib.images import to_tensor


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile", type=int, default=256, help="forced tile size in pixels")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    loaded = learned.load_shipped()
    images = [datasets.load_kodak(i) for i in range(1, args.images + 1)]
    learned.decompress_image(learned.compress_image(images[0], 0, tile=args.tile))  # warm-up
    lines = [f"Kodak, {len(images)} images; tiles of {args.tile} pixels against the whole image;"
             f" {torch.get_num_threads()} torch threads on "
             f"{platform.processor() or platform.machine()}, CPU",
             f"weights: {loaded.name} sha256 {loaded.sha256[:16]}…", "",
             f"{'setting':>7s} {'same files':>10s} {'pixels differing':>16s} {'bpp whole':>9s} "
             f"{'bpp tiled':>9s} {'PSNR whole':>10s} {'PSNR tiled':>10s} {'enc s whole':>11s} "
             f"{'enc s tiled':>11s} {'dec s whole':>11s} {'dec s tiled':>11s}"]
    print("\n".join(lines), flush=True)
    curves = {"whole": {"bpp": [], "psnr": []}, "tiled": {"bpp": [], "psnr": []}}
    for quality in range(loaded.model.num_rates):
        rows = []
        for image in images:
            row = {}
            for name, tile in (("whole", None), ("tiled", args.tile)):
                data, row[f"enc {name}"] = timed(learned.compress_image, image, quality,
                                                 tile=tile)
                decoded, row[f"dec {name}"] = timed(learned.decompress_image, data, tile=tile)
                row[f"data {name}"], row[f"decoded {name}"] = data, decoded
                row[f"bpp {name}"] = metrics.bpp(len(data), *image.shape[:2])
                row[f"psnr {name}"] = metrics.psnr(to_tensor(image), to_tensor(decoded)).item()
            rows.append(row)
        same = sum(row["data whole"] == row["data tiled"] for row in rows)
        differing = sum(int(np.count_nonzero(row["decoded whole"] != row["decoded tiled"]))
                        for row in rows)
        means = {key: np.mean([row[key] for row in rows])
                 for key in ("bpp whole", "bpp tiled", "psnr whole", "psnr tiled")}
        medians = {key: np.median([row[key] for row in rows])
                   for key in ("enc whole", "enc tiled", "dec whole", "dec tiled")}
        for name, curve in curves.items():
            for key in curve:
                curve[key].append(means[f"{key} {name}"])
        lines.append(f"{quality:7d} {same:>5d} / {len(rows):<2d} {differing:16d} "
                     f"{means['bpp whole']:9.4f} {means['bpp tiled']:9.4f} "
                     f"{means['psnr whole']:10.4f} {means['psnr tiled']:10.4f} "
                     f"{medians['enc whole']:11.3f} {medians['enc tiled']:11.3f} "
                     f"{medians['dec whole']:11.3f} {medians['dec tiled']:11.3f}")
        print(lines[-1], flush=True)
    whole, tiled = curves["whole"], curves["tiled"]
    bd = bench.bd_rate(whole["bpp"], whole["psnr"], tiled["bpp"], tiled["psnr"])
    lines += ["", f"BD-rate of tiles of {args.tile} pixels against the whole image: {bd:+.3f} % "
              "(negative = fewer bits at equal PSNR)"]
    print(lines[-1])
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
