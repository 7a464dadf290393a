"""Command line of the course's learned codec.

    python -m course_lib encode in.png out.licc --quality 1.5 [--effort 1]
    python -m course_lib encode in.png out.llcc --lossless
    python -m course_lib encode in.png out.llcl --lossless --learned
    python -m course_lib decode in.licc out.png
    python -m course_lib train --run-dir runs/msh          (see course_lib.recipes.codec_training)
    python -m course_lib export --run-dir runs/msh --out weights/codec/mean-scale-vr.pt
    python -m course_lib bench --images DIR --out DIR [--codecs learned,jpeg,webp,png,...]
                                                          (see course_lib.benchmark)

Problems a user can cause (an unreadable image, a damaged file, an output that cannot be
written or that is the input) end in one line "error: ..." and exit code 2; outputs are
written through <name>.part, so a failed write leaves nothing behind. Conversions of odd
inputs (transparency, animation, 16-bit or float samples: see course_lib.images.load_image)
are reported as "warning: ..." lines.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

USAGE = __doc__


class CommandError(Exception):
    """A problem with the command's files, reported as one ``error:`` line."""


def _encode(argv) -> int:
    from .codecs import learned
    from .images import ImageError, load_image
    from .metrics import bpp

    p = argparse.ArgumentParser(prog="python -m course_lib encode")
    p.add_argument("input", type=Path, help="an image file (PNG, JPEG, ...)")
    p.add_argument("output", type=Path, help="the compressed file to write")
    p.add_argument("--quality", type=float, default=None,
                   help="rate setting: 0 (smallest files) .. 3 (best quality), fractions allowed")
    p.add_argument("--lossless", action="store_true",
                   help="the course's predictive lossless coder (course_lib.codecs.lossless): "
                        "the exact pixels back; greyscale files stay greyscale")
    p.add_argument("--learned", action="store_true",
                   help="with --lossless: the learned lossless coder "
                        "(course_lib.codecs.lossless_learned, notebook 09), which fits its "
                        "network to each image: on Kodak its files are 1.6 %% smaller than "
                        "the default's, and it is much slower (about 14 s to encode and 2 s "
                        "to decode a Kodak image, against under 1 s)")
    p.add_argument("--effort", type=int, default=0, choices=[0, 1, 2],
                   help="0: fast (default); 1, 2: the encoder searches for better latents for "
                        "this image, smaller files at the same quality, slower (seconds to "
                        "minutes); the decoder is the same")
    args = p.parse_args(argv)
    if args.lossless == (args.quality is not None) or (args.lossless and args.effort):
        p.error("give --quality (learned lossy codec, with --effort if wished) or --lossless")
    if args.learned and not args.lossless:
        p.error("--learned goes with --lossless (the lossy codec is always learned)")
    try:
        _check_output(args.input, args.output)
        if args.lossless:
            from .codecs import lossless

            image = load_image(args.input, "L" if _is_greyscale(args.input) else "RGB")
            if args.learned:
                from .codecs import lossless_learned

                data = lossless_learned.compress_learned(image)
            else:
                data = lossless.compress_lossless(image)
        else:
            image = load_image(args.input)
            data = learned.compress_image(image, args.quality, effort=args.effort)
        _write_atomically(args.output, data)
    except (CommandError, ImageError, ValueError, learned.WeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    height, width = image.shape[:2]
    print(f"{args.output}: {len(data):,} bytes, {bpp(len(data), height, width):.3f} bpp "
          f"({width}x{height})")
    return 0


def _is_greyscale(path: Path) -> bool:
    """Whether an image file holds one channel (its pixels then stay one channel)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")
    except (OSError, UnidentifiedImageError):
        return False  # load_image reports the problem


def _decode(argv) -> int:
    from .codecs import learned, lossless, lossless_learned
    from .images import ImageError, image_file_bytes

    p = argparse.ArgumentParser(prog="python -m course_lib decode")
    p.add_argument("input", type=Path, help="a file written by `encode` (lossy or lossless)")
    p.add_argument("output", type=Path, help="the image to write (.png keeps it lossless)")
    args = p.parse_args(argv)
    if not args.input.is_file():
        print(f"error: no file at {args.input}", file=sys.stderr)
        return 2
    try:
        _check_output(args.input, args.output)
        data = args.input.read_bytes()
        if data[:4] == lossless.MAGIC:
            image = lossless.decompress_lossless(data)
        elif data[:4] == lossless_learned.MAGIC:
            image = lossless_learned.decompress_learned(data)
        else:
            image = learned.decompress_image(data)
        _write_atomically(args.output, image_file_bytes(image, args.output.suffix))
    except (learned.CodecFileError, lossless.LosslessFileError, learned.WeightsError) as error:
        print(f"error: {args.input}: {error}", file=sys.stderr)
        return 2
    except (CommandError, ImageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.output.suffix.lower() not in (".png", ".bmp", ".tif", ".tiff", ".ppm"):
        print(f"note: {args.output.suffix} may be lossy; use .png to keep the decoded pixels",
              file=sys.stderr)
    print(f"{args.output}: {image.shape[1]}x{image.shape[0]}")
    return 0


def _check_output(source: Path, output: Path) -> None:
    """Refuse an output that cannot be a new file, before any work is done."""
    if output.resolve() == source.resolve():
        raise CommandError(f"the output {output} is the input file; give the output another "
                           "name")
    if output.is_dir():
        raise CommandError(f"{output} is a folder; give a file name for the output")
    if not output.parent.is_dir():
        raise CommandError(f"cannot write {output}: there is no folder {output.parent}")


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` through ``path.part``: a failed write leaves neither behind."""
    partial = path.with_name(path.name + ".part")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise CommandError(f"cannot write {path}: {error.strerror or error}") from None


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = _print_warning
        return _run(sys.argv[1:] if argv is None else argv)


def _run(argv) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "encode":
        return _encode(rest)
    if command == "decode":
        return _decode(rest)
    if command == "train":
        from .recipes.codec_training import main as train_main

        train_main(rest)
        return 0
    if command == "export":
        from .recipes.codec_training import export

        export(rest)
        return 0
    if command == "bench":
        from .benchmark import main as bench_main

        return bench_main(rest)
    print(f"error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
