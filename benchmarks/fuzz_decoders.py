"""Fuzz every decoder of untrusted bytes in the course, and count what happens.

Run from the repository root:  .venv/bin/python benchmarks/fuzz_decoders.py
It prints a table and writes it to benchmarks/results/fuzz_decoders.txt. ``--mutations 300
--json`` is the short, seeded run of ``tests/test_fuzz.py``.

Formats: the learned codec's files (:mod:`course_lib.codecs.learned`, the shipped model),
the learned lossless coder's files (:mod:`course_lib.codecs.lossless_learned`, which hold a
predictive LLCC file for their coarsest image), mini-JPEG, latent files (notebook 03's,
:mod:`course_lib.codecs.latent_files`), the readable rANS (:mod:`course_lib.entropy.rans`) and
its stream of values with a table each, the fast path (:mod:`course_lib.entropy.fast`), Huffman
data and PackBits. For each, from a few valid files:

- ``mutation``: random damage (flipped bits, overwritten, inserted, deleted or repeated bytes),
  once with the file's checksum as damaged (``kept``) and once recomputed (``fixed``: the damage
  then reaches the parser behind the checksum);
- ``truncation``: every prefix of each file (at most 600 evenly spaced ones of a long file);
- ``field``: every header field at its extremes (0, 1, max - 1, max, and its value + 1);
- ``bomb``: small files that claim huge images, grids or symbol counts.

Outcomes: ``decoded``, ``refused`` (the format's documented error) or ``unexpected: <type>``
(any other exception: a bug). A ``kept`` mutation that decodes got past a checksum. Each case is
timed; the rise of the peak resident memory (``ru_maxrss``) over the whole run, after each
format has decoded its valid files once, bounds what any one case allocated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import struct
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from course_lib import autoencoders
from course_lib.codecs import latent_files, learned, lossless_learned
from course_lib.codecs import mini_jpeg as mj
from course_lib.entropy import (
    AdaptiveModel,
    DecodeError,
    HuffmanCode,
    StaticModel,
    decode_with_indexes,
    encode_with_indexes,
    gaussian_cdf_table,
    log_scale_table,
    packbits_decode,
    packbits_encode,
    rans,
    rans_decode,
    rans_encode,
)

RESULTS = Path(__file__).parent / "results" / "fuzz_decoders.txt"


@dataclass
class Format:
    """A decoder under test and how to make its cases.

    ``decoders[i]`` decodes bytes shaped like ``files[i]`` (the entropy coders need the
    message length or indexes, which the caller knows; a bomb names the decoder it goes to);
    ``checked``: the format has a checksum, so no damaged file may decode; ``fix`` recomputes
    it (None where it cannot be recomputed from outside); ``fields`` are the header fields as
    (offset, struct code).
    """

    name: str
    error: type[Exception]
    files: list[bytes]
    decoders: list
    checked: bool
    fix: Callable[[bytes], bytes] | None = None
    fields: list[tuple[int, str]] = field(default_factory=list)
    # (name, bytes, decoder, expected outcome): a bomb is refused; a flat image is decoded
    bombs: list[tuple[str, bytes, int, str]] = field(default_factory=list)


def _with_crc(byteorder: str):
    def fix(data: bytes) -> bytes:
        body = data[:-4]
        return body + zlib.crc32(body).to_bytes(4, byteorder)
    return fix


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3))
    image = np.kron(blocks, np.ones((8, 8, 1)))[:height, :width]
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def set_field(data: bytes, offset: int, code: str, *values) -> bytes:
    """``data`` with the field(s) at ``offset`` (a struct format) set to ``values``."""
    patched = bytearray(data)
    struct.pack_into(code, patched, offset, *values)
    return bytes(patched)


def png_claiming(png: bytes, height: int, width: int) -> bytes:
    """A PNG file whose header (IHDR, and its CRC) says ``height x width``; its data stays."""
    claimed = set_field(png, 16, ">II", width, height)
    return set_field(claimed, 29, ">I", zlib.crc32(claimed[12:29]))


# -- the formats ---------------------------------------------------------------------------
def learned_format() -> Format:
    loaded = learned.load_shipped()
    files = [learned.compress_image(_photo(h, w, seed), quality, loaded)
             for h, w, seed, quality in ((32, 48, 0, 0.0), (64, 64, 1, 3.0), (70, 100, 2, 1.5))]
    fields = [(4, ">B"), (5, ">B"), (14, ">H"), (16, ">H"), (18, ">B"), (19, ">B"),
              (20, ">H"), (22, ">B"), (23, ">I"), (27, ">I")]
    fix = _with_crc("big")
    small = files[0]
    # height, width and the padding to the model's stride of 64
    bombs = [(f"claims {size}x{size}", fix(set_field(small, 14, ">HHBB", size, size, -size % 64,
                                                     -size % 64)), 0, "refused")
             for size in (65535, 9000, 2048, 512)]
    # 43 bytes: a header, two streams of one word each, a checksum (the hyperprior, id 0)
    hyperprior = learned.load_shipped(learned.SHIPPED_MODELS[0])
    tiny = struct.pack(">4sBB8sHHBBHBII", b"LICC", learned.VERSION, 0,
                       bytes.fromhex(hyperprior.sha256[:16]), 65535, 65535, 1, 1, 1000, 2, 4, 4)
    tiny += b"\1\0\0\0" * 2
    bombs.append(("43 bytes claiming 65535x65535", tiny + zlib.crc32(tiny).to_bytes(4, "big"), 0,
                  "refused"))
    decode = learned.decompress_image
    return Format("learned codec", learned.CodecFileError, files, [decode] * len(files), True,
                  fix, fields, bombs)


def mini_jpeg_format() -> Format:
    files = [mj.encode(_photo(24, 40, 3), 50), mj.encode(_photo(40, 24, 4), 90, "haar", "4:4:4"),
             mj.encode(_photo(16, 16, 5), 10, "haar", levels=2)]
    fields = [(4, "<B"), (5, "<B"), (6, "<B"), (7, "<B"), (8, "<B"), (9, "<H"), (11, "<H")]
    offset = 13  # after the header, the counts of the luma group follow its two tables
    for _ in range(2):
        offset = mj.read_table(files[0], offset)[1]
    fields += [(offset, "<I"), (offset + 4, "<I"), (offset + 8, "<I")]
    fix = _with_crc("little")
    bombs = [(f"claims {size}x{size}", fix(set_field(files[0], 9, "<HH", size, size)), 0,
              "refused") for size in (65535, 9000, 2048)]
    return Format("mini-JPEG", DecodeError, files, [mj.decode] * len(files), True, fix, fields,
                  bombs)


def lossless_learned_format() -> Format:
    files = [lossless_learned.compress_learned(_photo(20, 28, 6)),
             lossless_learned.compress_learned(_photo(13, 9, 7)[..., 1], levels=2),
             lossless_learned.compress_learned(_photo(17, 16, 8), levels=1),
             lossless_learned.compress_learned(_photo(18, 22, 9), adapt=True, adapt_steps=5)]
    # ... and 25: version 2's adaptation length (a segment length in version 1)
    fields = [(4, ">B"), (5, ">B"), (6, ">B"), (7, ">B"), (8, ">I"), (12, ">I"), (16, ">I"),
              (20, ">I"), (25, ">I")]
    fix = _with_crc("big")
    bombs = [(f"claims {size}x{size}", fix(set_field(files[0], 8, ">II", size, size)), 0,
              "refused") for size in (65535, 9000, 2048)]
    decode = lossless_learned.decompress_learned
    return Format("learned lossless", lossless_learned.LosslessFileError, files,
                  [decode] * len(files), True, fix, fields, bombs)


def latent_format() -> Format:
    torch.manual_seed(0)
    model = autoencoders.StridedAutoencoder(latent_channels=4, downsamplings=2, channels=8)
    x = torch.rand(1, 3, 13, 22, generator=torch.Generator().manual_seed(0))
    files = [latent_files.compress_image(model, x, bits, method)
             for method in latent_files.STORAGE_METHODS for bits in (1, 3, 8)]
    fields = [(0, "<B"), (1, "<B"), (2, "<H"), (4, "<H"), (6, "<H"), (8, "<H"), (10, "<H"),
              (12, "<f"), (28, "<f")]
    header = struct.Struct("<BBHHHHH")
    ranges = np.tile(np.array([[0.0], [1.0]], "<f4"), (1, 4)).tobytes()

    def zlib_file(rows: int, cols: int, payload: bytes) -> bytes:
        size = (min(4 * rows, 65535), min(4 * cols, 65535))  # the model's factor is 4
        return header.pack(2, 8, 4, rows, cols, *size) + ranges + payload

    start = header.size + 32  # the PNG of a 4-channel file follows the header and the ranges
    bombs = [
        ("raw 65535x65535", header.pack(0, 8, 4, 65535, 65535, 65535, 65535) + ranges, 0,
         "refused"),
        ("zlib 16384x32768 in 65 KB", zlib_file(16384, 32768, np.random.default_rng(0).bytes(
            65000)), 6, "refused"),
        ("zlib 2048x2048 in 11 bytes", zlib_file(2048, 2048, zlib.compress(b"")), 6, "refused"),
        *[(f"PNG claiming {size}x{size}", files[5][:start] + png_claiming(files[5][start:],
                                                                           size, size), 5,
           "refused") for size in (30000, 9000)],
        # a flat 1024 x 1024 image in 300 bytes is no bomb: it decodes, within deflate's ratio
        ("zlib 256x256 of zeros", zlib_file(256, 256, zlib.compress(bytes(4 * 256**2), 9)), 6,
         "decoded"),
    ]
    decoders = [partial(latent_files.decompress_image, model)] * len(files)
    return Format("latent files", DecodeError, files, decoders, False, None, fields, bombs)


def rans_format() -> Format:
    rng = np.random.default_rng(6)
    models = [AdaptiveModel(2), AdaptiveModel(16), StaticModel.from_pmf(rng.dirichlet(np.ones(8)))]
    messages = [[1], rng.integers(0, 16, 40), rng.choice(8, 300)]
    files, decoders = [], []
    for model, message in zip(models, messages, strict=True):
        files.append(rans_encode(message, model))
        decoders.append(partial(rans_decode, num_symbols=len(message), model=model))
    fields = [(0, "<I"), (4, "<I")]
    return Format("readable rANS", DecodeError, files, decoders, True, None, fields)


def readable_stream_format() -> Format:
    table = gaussian_cdf_table(log_scale_table(0.2, 40, 12))
    rng = np.random.default_rng(7)
    files, decoders = [], []
    for size in (4, 60, 400):
        indexes = rng.integers(0, table.num_tables, size)
        values = np.round(rng.normal(0, 3, size) * (1 + 30 * (rng.random(size) < 0.05)))
        files.append(rans.encode_with_indexes(values.astype(np.int64), indexes, table))
        decoders.append(lambda data, i=indexes: rans.decode_with_indexes(data, i, table))
    bombs = [("count 2**32 - 1", set_field(files[0], 0, "<I", 2**32 - 1), 0, "refused"),
             ("count 16 per value", set_field(files[0], 0, "<I", 64), 0, "refused")]
    return Format("readable stream (notebook 06)", DecodeError, files, decoders, True, None,
                  [(0, "<I")], bombs)


def fast_format() -> Format:
    table = gaussian_cdf_table(log_scale_table(0.11, 64, 24))
    rng = np.random.default_rng(8)
    files, decoders = [], []
    for size in (1, 50, 2000):
        indexes = rng.integers(0, table.num_tables, size)
        values = np.round(rng.normal(0, 2, size)).astype(np.int64)
        files.append(encode_with_indexes(values, indexes, table))
        decoders.append(lambda data, i=indexes: decode_with_indexes(data, i, table))
    many = rng.integers(0, table.num_tables, 10**6)
    bombs = [("8 bytes for 1e6 values", files[0][:8].ljust(8, b"\1"), 3, "refused")]
    decoders.append(lambda data: decode_with_indexes(data, many, table))
    return Format("fast path", DecodeError, files, decoders, True, None, [], bombs)


def huffman_format() -> Format:
    rng = np.random.default_rng(9)
    code = HuffmanCode.from_frequencies(rng.integers(1, 50, 20), 16)
    messages = [[3], rng.integers(0, 20, 50), rng.integers(0, 20, 500)]
    files = [code.encode(np.asarray(message)) for message in messages]
    decoders = [partial(code.decode, num_symbols=len(message)) for message in messages]
    decoders.append(lambda data: code.decode(data, 10**9))
    return Format("Huffman", DecodeError, files, decoders, False, None, [],
                  [("10 bytes for 1e9 symbols", bytes(10), 3, "refused")])


def packbits_format() -> Format:
    rng = np.random.default_rng(10)
    raw = [bytes(rng.integers(0, 3, 40).astype(np.uint8)), bytes(300), rng.bytes(100)]
    files = [packbits_encode(data) for data in raw]
    decoders = [partial(packbits_decode, expected_size=len(data)) for data in raw]
    bombs = [("1 KB of longest runs", bytes([129, 7]) * 512, 1, "refused")]
    return Format("PackBits", DecodeError, files, decoders, False, None, [], bombs)


FORMATS = {"learned": learned_format, "lossless-learned": lossless_learned_format,
           "mini-jpeg": mini_jpeg_format, "latents": latent_format,
           "rans": rans_format, "readable": readable_stream_format, "fast": fast_format,
           "huffman": huffman_format, "packbits": packbits_format}


# -- the cases -----------------------------------------------------------------------------
def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    damaged = bytearray(data)
    kind = rng.integers(5)
    position = int(rng.integers(len(damaged)))
    length = int(rng.integers(1, 9))
    if kind == 0:
        for _ in range(rng.integers(1, 5)):
            damaged[int(rng.integers(len(damaged)))] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        damaged[position : position + length] = rng.bytes(length)[: len(damaged) - position]
    elif kind == 2:
        damaged[position:position] = rng.bytes(length)
    elif kind == 3:
        del damaged[position : position + length]
    else:
        damaged[position:position] = damaged[position : position + length]
    return bytes(damaged)


def _extremes(data: bytes, offset: int, code: str) -> list[int]:
    if offset + struct.calcsize(code) > len(data):
        return []
    if code[-1] == "f":
        return [0.0, -1.0, float("inf"), float("nan"), 3.4e38, -3.4e38]
    top = (1 << 8 * struct.calcsize(code)) - 1
    (value,) = struct.unpack_from(code, data, offset)
    return sorted({0, 1, top - 1, top, (value + 1) & top})


def cases(fmt: Format, mutations: int, seed: int):
    """(kind, variant, file index, bytes) of every case of one format; the variant of damage
    is "kept" (the checksum as damaged), "fixed" (recomputed) or "" (the format has none)."""
    rng = np.random.default_rng(seed)
    kept = "kept" if fmt.checked else ""
    for index, data in enumerate(fmt.files):
        cuts = range(len(data)) if len(data) <= 600 else np.linspace(0, len(data) - 1, 600)
        for cut in sorted({int(c) for c in cuts}):
            yield "truncation", kept, index, data[:cut]
        damaged_files = [("field", set_field(data, offset, code, value))
                         for offset, code in fmt.fields
                         for value in _extremes(data, offset, code)]
        damaged_files += [("mutation", _mutate(data, rng)) for _ in range(mutations)]
        for kind, damaged in damaged_files:
            if damaged != data:
                yield kind, kept, index, damaged
            if fmt.fix and len(damaged) >= 4 and fmt.fix(damaged) != data:
                yield kind, "fixed", index, fmt.fix(damaged)
    for name, data, index, _ in fmt.bombs:
        yield "bomb", name, index, data


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def run_format(fmt: Format, mutations: int, seed: int) -> dict:
    for decode, data in zip(fmt.decoders, fmt.files, strict=False):
        decode(data)  # valid files decode (and warm up every code path's allocations)
    start_rss = peak_rss_mb()
    outcomes, slowest = Counter(), (0.0, "")
    for kind, variant, index, data in cases(fmt, mutations, seed):
        started = time.perf_counter()
        try:
            fmt.decoders[index](data)
            outcome = "decoded"
        except fmt.error:
            outcome = "refused"
        except Exception as error:  # noqa: BLE001 (counting every other exception is the point)
            outcome = f"unexpected: {type(error).__name__}: {str(error)[:80]}"
        seconds = time.perf_counter() - started
        slowest = max(slowest, (seconds, f"{kind} {variant} of file {index}"))
        outcomes[f"{kind}|{variant}|{outcome}"] += 1
    surprises = [name for name, *_, expected in fmt.bombs
                 if outcomes[f"bomb|{name}|{expected}"] != 1]
    return {"format": fmt.name, "error": fmt.error.__name__, "outcomes": dict(outcomes),
            "checked": fmt.checked, "bomb_surprises": surprises,
            "cases": sum(outcomes.values()),
            "max_seconds": slowest[0], "slowest": slowest[1],
            "rss_growth_mb": peak_rss_mb() - start_rss, "max_file_bytes": max(map(len, fmt.files))}


def report(results: list[dict], mutations: int, seed: int, seconds: float) -> str:
    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}, numpy {np.__version__}; seed {seed}, {mutations} "
             f"mutations per valid file, {seconds:.0f} s in all", ""]
    for result in results:
        lines.append(f"{result['format']} ({result['cases']} cases, valid files up to "
                     f"{result['max_file_bytes']} bytes; documented error {result['error']}): "
                     f"max {result['max_seconds']:.3f} s ({result['slowest']}), peak memory "
                     f"+{result['rss_growth_mb']:.0f} MB")
        for key, count in sorted(result["outcomes"].items()):
            kind, variant, outcome = key.split("|", 2)
            lines.append(f"    {kind:10s} {variant:30s} {outcome:30s} {count:7d}")
        lines.append("")
    total = sum(result["cases"] for result in results)
    unexpected = sum(count for result in results for key, count in result["outcomes"].items()
                     if "|unexpected" in key)
    lines.append(f"total: {total} cases, {unexpected} unexpected exceptions, max "
                 f"{max(r['max_seconds'] for r in results):.3f} s per case, peak memory growth "
                 f"{max(r['rss_growth_mb'] for r in results):.0f} MB")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=3000,
                        help="random mutations per valid file (each also with a fixed checksum)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", nargs="*", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--json", action="store_true", help="print JSON, write no file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    results = [{"key": name, **run_format(FORMATS[name](), args.mutations, args.seed + number)}
               for number, name in enumerate(args.formats)]
    if args.json:
        print(json.dumps(results))
        return
    text = report(results, args.mutations, args.seed, time.perf_counter() - started)
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
