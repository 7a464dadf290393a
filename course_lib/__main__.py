"""Command line of the course's learned codec.

    python -m course_lib encode in.png out.licc --quality 1.5
    python -m course_lib decode in.licc out.png
    python -m course_lib train --run-dir runs/msh          (see course_lib.codec_training)
    python -m course_lib export --run-dir runs/msh --out weights/codec/mean-scale-vr.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE = __doc__


def _encode(argv) -> int:
    from .codecs import learned
    from .images import ImageError, load_image
    from .metrics import bpp

    p = argparse.ArgumentParser(prog="python -m course_lib encode")
    p.add_argument("input", type=Path, help="an image file (PNG, JPEG, ...)")
    p.add_argument("output", type=Path, help="the compressed file to write")
    p.add_argument("--quality", type=float, required=True,
                   help="rate setting: 0 (smallest files) .. 3 (best quality), fractions allowed")
    args = p.parse_args(argv)
    try:
        image = load_image(args.input)
        data = learned.compress_image(image, args.quality)
    except (ImageError, ValueError, learned.WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _write_atomically(args.output, data)
    height, width = image.shape[:2]
    print(f"{args.output}: {len(data):,} bytes, {bpp(len(data), height, width):.3f} bpp "
          f"({width}x{height})")
    return 0


def _decode(argv) -> int:
    from .codecs import learned
    from .images import save_image

    p = argparse.ArgumentParser(prog="python -m course_lib decode")
    p.add_argument("input", type=Path, help="a file written by `encode`")
    p.add_argument("output", type=Path, help="the image to write (.png keeps it lossless)")
    args = p.parse_args(argv)
    if not args.input.is_file():
        print(f"error: no file at {args.input}", file=sys.stderr)
        return 2
    try:
        image = learned.decompress_image(args.input.read_bytes())
    except (learned.CodecFileError, learned.WeightsError) as error:
        print(f"error: {args.input}: {error}", file=sys.stderr)
        return 2
    if args.output.suffix.lower() not in (".png", ".bmp", ".tif", ".tiff", ".ppm"):
        print(f"note: {args.output.suffix} may be lossy; use .png to keep the decoded pixels",
              file=sys.stderr)
    save_image(image, args.output)
    print(f"{args.output}: {image.shape[1]}x{image.shape[0]}")
    return 0


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "encode":
        return _encode(rest)
    if command == "decode":
        return _decode(rest)
    if command == "train":
        from .codec_training import main as train_main

        train_main(rest)
        return 0
    if command == "export":
        from .codec_training import export

        export(rest)
        return 0
    print(f"error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
