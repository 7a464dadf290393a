"""Peak memory and time of the learned codec on big photos, each case in a fresh process.

    python benchmarks/learned_codec_memory.py [--sizes 1,6,12,24] [--tile PIXELS|none]
                                              [--quality Q] [--out FILE]

For each size (megapixels, 3:2) a photo-like image is made from Kodak: the 24 images, each
enlarged 2x (bicubic), laid side by side and cropped to the size, so that detail per pixel is
that of a photo rather than of one picture blown up. Encoding (``compress_image``) and
decoding (``decompress_image``) then each run in a new Python process, which reports its wall
time for that call and its peak resident memory (``ru_maxrss``) at the end: the whole process,
PyTorch, the model and the image included. "base" is that peak after the imports and the
model load, before the image is read.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_gb() -> float:
    """Peak resident memory of this process so far, GB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def worker(operation: str, source: Path, target: Path, quality: float, tile) -> None:
    """Run one encode or decode in this (fresh) process; print its numbers as JSON."""
    import torch

    from course_lib.codecs import learned

    learned.load_shipped()
    base = peak_gb()
    if operation == "encode":
        image = np.load(source)
        start = time.perf_counter()
        data = learned.compress_image(image, quality, tile=tile)
        seconds = time.perf_counter() - start
        target.write_bytes(data)
    else:
        data = source.read_bytes()
        start = time.perf_counter()
        learned.decompress_image(data, tile=tile)
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_gb": peak_gb(), "base_gb": base,
                      "bytes": len(data), "threads": torch.get_num_threads()}))


def photo(megapixels: float) -> np.ndarray:
    """A 3:2 RGB image of about ``megapixels`` made of Kodak images enlarged 2x."""
    from PIL import Image

    from course_lib import datasets

    width = round((megapixels * 1e6 * 1.5) ** 0.5)
    height = round(width / 1.5)
    canvas = np.zeros((height, width, 3), np.uint8)
    index, top = 0, 0
    while top < height:
        left, row_height = 0, 0
        while left < width:
            image = Image.fromarray(datasets.load_kodak(index % 24 + 1))
            image = np.asarray(image.resize((image.width * 2, image.height * 2),
                                            Image.Resampling.BICUBIC))
            piece = image[: height - top, : width - left]
            canvas[top : top + piece.shape[0], left : left + piece.shape[1]] = piece
            left += piece.shape[1]
            row_height = max(row_height, piece.shape[0])
            index += 1
        top += row_height
    return canvas


def run_case(operation: str, source: Path, target: Path, quality: float, tile: str) -> dict:
    command = [sys.executable, __file__, "--worker", operation, str(source), str(target),
               "--quality", str(quality), "--tile", tile]
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,6,12,24", help="megapixels, comma-separated")
    parser.add_argument("--tile", default="default",
                        help="tile size in pixels, 'none' (untiled) or 'default'")
    parser.add_argument("--quality", type=float, default=1.0, help="rate setting")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    parser.add_argument("--worker", nargs=3, metavar=("OPERATION", "SOURCE", "TARGET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    from course_lib.codecs import learned

    tile = {"default": learned.DEFAULT_TILE, "none": None}.get(args.tile, args.tile)
    tile = int(tile) if isinstance(tile, str) else tile
    if args.worker:
        operation, source, target = args.worker
        worker(operation, Path(source), Path(target), args.quality, tile)
        return

    import torch
    lines = [f"learned codec, rate setting {args.quality:g}, tile {tile}; one fresh process per "
             f"case; {torch.get_num_threads()} torch threads on "
             f"{platform.processor() or platform.machine()}, CPU, torch {torch.__version__}",
             "peak = peak resident memory of the whole process (ru_maxrss); base = the same "
             "after imports and model load", "",
             f"{'MP':>5s} {'size':>11s} {'bpp':>6s} {'enc s':>7s} {'enc GB':>7s} "
             f"{'dec s':>7s} {'dec GB':>7s} {'base GB':>7s}"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for megapixels in (float(size) for size in args.sizes.split(",")):
            image = photo(megapixels)
            height, width = image.shape[:2]
            np.save(folder / "image.npy", image)
            del image
            encoded = run_case("encode", folder / "image.npy", folder / "image.licc",
                               args.quality, args.tile)
            decoded = run_case("decode", folder / "image.licc", folder / "unused",
                               args.quality, args.tile)
            bpp = 8 * encoded["bytes"] / (height * width)
            lines.append(f"{height * width / 1e6:5.1f} {width:5d}x{height:<5d} {bpp:6.3f} "
                         f"{encoded['seconds']:7.1f} {encoded['peak_gb']:7.2f} "
                         f"{decoded['seconds']:7.1f} {decoded['peak_gb']:7.2f} "
                         f"{max(encoded['base_gb'], decoded['base_gb']):7.2f}")
            print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
