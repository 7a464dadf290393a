"""Benchmark the course's codecs and the anchors on a folder of your own images.

    python -m course_lib bench --images DIR --out DIR [--codecs learned,jpeg,png,...]
        [--threads N] [--no-progress]

Every lossy codec runs over its rate settings and every lossless one once, on every image of
the folder, as ``shared/BENCHMARK_CONVENTIONS.md`` asks: each codec writes a real file in
memory, its length is the size (bpp = ``8 * bytes / (H * W)``, headers included), and the
decoded image is what is measured: PSNR on 8-bit RGB and MS-SSIM on RGB in [0, 1] per image
and setting (MS-SSIM needs a shorter side above 160 pixels; smaller images have none). A
lossless codec's file is decoded and compared bit for bit; a mismatch is an error of that
codec on that image, never a measurement. Rates are also given in bits per subpixel (bpsp,
``8 * bytes / (H * W * C)`` with C the image's channels: 1 for a greyscale image).

Curves are the mean bpp and the mean PSNR (or MS-SSIM) of each setting over the same images
(CompressAI's convention); BD-rates (:mod:`course_lib.bench`) of every lossy codec against
JPEG and against each other, for PSNR and for MS-SSIM in dB (``-10 log10(1 - MS-SSIM)``).
Times are wall clock per image, after one warm-up per codec on a small synthetic image,
medians over images.

Results are cached per (image content, codec, setting, codec version) as one small JSON file
in ``OUT/cache/``: an interrupted run resumes where it stopped, and a rerun with one more codec
computes only that codec. The version covers what changes the bytes: Pillow's and the plugin's
versions with the options, the learned codec's weights (sha256) and file format, the course
codecs' format versions.

Inputs: the image files directly inside the folder (:data:`IMAGE_EXTENSIONS`); other files
are ignored, and a file that cannot be read is reported on one line and skipped. Greyscale
images are given to the lossy codecs as RGB (the grey in all three channels, noted), and to
the lossless codecs as grey (PNG, JPEG XL and the course's coder store one channel; WebP has
no grey mode and stores RGB). A codec that cannot run here (no JPEG XL plugin, a Pillow built
without AVIF, no learned weights) is reported once and left out.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import io
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from . import bench

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".webp", ".bmp",
                    ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi", ".avif", ".jxl",
                    ".jp2", ".j2k", ".jpx")
QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)  # as course_lib.codecs.classical
WARM_UP_SIZE = 64  # pixels square: the synthetic image each codec is warmed up on
SHOWN_FAILURES = 3  # failed measurements printed per codec; the report lists them all
RESULT_FIELDS = ("image", "image_sha256", "width", "height", "channels", "codec", "lossless",
                 "setting", "bytes", "bpp", "bpsp", "psnr", "ms_ssim", "encode_s", "decode_s",
                 "exact", "error", "note", "cached")
# A Pillow format is only there if Pillow was built with it: the feature that tells.
_PILLOW_FEATURES = {"JPEG": "jpg", "WEBP": "webp", "AVIF": "avif", "JPEG2000": "jpg_2000",
                    "PNG": "zlib"}


class BenchError(Exception):
    """A problem with the command's inputs, reported as one ``error:`` line (exit code 2)."""


# ---------------------------------------------------------------------------------------------
# The codecs


@dataclass(frozen=True)
class BenchCodec:
    """A codec as the benchmark runs it: ``encode(image, setting) -> bytes``, ``decode(bytes)
    -> image``; lossy codecs get uint8 RGB ``(H, W, 3)``, lossless ones the image as loaded
    (``(H, W)`` for greyscale)."""

    name: str
    label: str
    lossless: bool
    settings: tuple
    setting_name: str
    description: str  # its settings, for the report
    encode: Callable = field(repr=False)
    decode: Callable = field(repr=False)
    default: bool = True  # in the default list (the slow ones are opt-in)
    pillow_format: str | None = None


@cache
def _learned_model():
    from .codecs import learned

    loaded = learned.load_shipped()
    loaded.model.eval()
    return loaded


def _classical(name: str, label: str, description: str, **extra) -> BenchCodec:
    from .codecs import classical

    spec = classical.get_codec(name)
    if spec.lossless:
        def encode(image, setting):
            return _pillow_lossless_encode(image, name)
    else:
        def encode(image, setting):
            return classical.encode(image, name, setting)

    def decode(data):
        return _pillow_lossless_decode(data, name) if spec.lossless else classical.decode(data)

    return BenchCodec(name.replace("_", "-"), label, spec.lossless, spec.settings,
                      spec.setting_name, description, encode, decode,
                      pillow_format=spec.format, **extra)


def _pillow_lossless_encode(image: np.ndarray, name: str) -> bytes:
    """:func:`classical.encode`, which takes RGB only, but greyscale coded as greyscale."""
    from PIL import Image

    from .codecs import classical

    if image.ndim == 3:
        return classical.encode(image, name)
    spec = classical.get_codec(name)
    if spec.format == "JXL":
        classical.register_jpeg_xl()  # the same ImportError, with its advice
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=spec.format, **spec.options(None))
    return buffer.getvalue()


def _pillow_lossless_decode(data: bytes, name: str) -> np.ndarray:
    """:func:`classical.decode`, but a greyscale file gives a greyscale array (so the
    exactness check sees what the file holds)."""
    from PIL import Image

    from .codecs import classical
    from .images import load_image

    if classical.get_codec(name).format == "JXL":
        classical.register_jpeg_xl()
    with Image.open(io.BytesIO(data)) as image:  # reads the header only
        grey = image.mode in ("1", "L", "I", "I;16", "F")
    return load_image(data, "L") if grey else classical.decode(data)


def _learned_codec(effort: int) -> BenchCodec:
    from . import refine
    from .codecs import learned

    def encode(image, setting):
        return learned.compress_image(image, setting, _learned_model(), effort=effort)

    def decode(data):
        return learned.decompress_image(data, _learned_model())

    name = "learned" if effort == 0 else f"learned-e{effort}"
    search = ("" if effort == 0 else
              f", encoder search for better latents (effort {effort}: "
              f"{refine.EFFORT_STEPS[effort]} steps per image and setting: seconds to "
              "minutes)")
    return BenchCodec(name, "learned (course)" if effort == 0 else
                      f"learned (course, effort {effort})", False,
                      (0, 1, 2, 3), "rate setting",
                      f"the course's learned codec (the shipped default model: a hyperprior "
                      f"with a checkerboard context model), "
                      f"rate settings 0, 1, 2, 3, effort {effort}{search}",
                      encode, decode, default=effort == 0)


def _mini_jpeg() -> BenchCodec:
    from .codecs import mini_jpeg

    def encode(image, setting):
        return mini_jpeg.encode(image, int(setting))

    def decode(data):
        return mini_jpeg.decode(data)

    return BenchCodec("mini-jpeg", "mini-JPEG (course)", False, QUALITIES, "quality",
                      "the course's own JPEG (course_lib.codecs.mini_jpeg): 8x8 DCT, 4:2:0, "
                      "IJG tables, Huffman codes made per image; qualities 5..95",
                      encode, decode)


def _course_lossless(name: str, label: str, compress, decompress, description: str
                     ) -> BenchCodec:
    """One of the course's own lossless coders: ``compress(image) -> bytes`` and back (given
    as lambdas that look the module's function up when called, so a test can replace it)."""
    def encode(image, setting):
        return compress(image)

    return BenchCodec(name, label, True, (None,), "none", description, encode, decompress)


def _learned_lossless_model():
    from .codecs import lossless_learned

    return lossless_learned.shipped_model()


@cache
def _jpeg_filter_model():
    from . import cnn_jpeg

    return cnn_jpeg.load_filter()


def _jpeg_filtered() -> BenchCodec:
    from . import cnn_jpeg
    from .codecs import classical

    def encode(image, setting):
        return classical.encode(image, "jpeg", setting)  # the same bytes as plain JPEG

    def decode(data):
        return cnn_jpeg.decode_filtered(data, _jpeg_filter_model())

    return BenchCodec("jpeg-filter", "JPEG + CNN filter (course)", False,
                      classical.get_codec("jpeg").settings, "quality",
                      "plain JPEG files (4:2:0, optimize=True, qualities 5..95) decoded by "
                      "Pillow and repaired by the course's CNN post-filter (course_lib.cnn_jpeg,"
                      " notebook 08): the bytes are JPEG's", encode, decode)


@cache
def codecs() -> dict[str, BenchCodec]:
    """Every codec the benchmark knows, by name, in the order of the reports."""
    from .codecs import lossless, lossless_learned

    quality = "qualities 5..95"
    table = [
        _learned_codec(0), _learned_codec(1), _learned_codec(2),
        _classical("jpeg", "JPEG 4:2:0", f"Pillow JPEG, 4:2:0, optimize=True, {quality} "
                   "(the reference)"),
        _classical("jpeg444", "JPEG 4:4:4", f"Pillow JPEG, 4:4:4, optimize=True, {quality}",
                   default=False),
        _classical("webp", "WebP", f"Pillow WebP, method=6, {quality}"),
        _classical("avif", "AVIF", f"Pillow AVIF, speed=4, 4:2:0, {quality}"),
        _classical("jxl", "JPEG XL", f"pillow-jxl-plugin, effort=7, {quality}"),
        _classical("jpeg2000", "JPEG 2000", "OpenJPEG through Pillow, irreversible=True, one "
                   "rate layer, compression ratios 240..8 (falls well short of published "
                   "JPEG 2000 curves)"),
        _mini_jpeg(),
        _classical("png", "PNG", "Pillow PNG, optimize=True; greyscale as one channel"),
        _classical("webp_lossless", "WebP lossless", "Pillow WebP, lossless=True, quality=100, "
                   "method=6; greyscale stored as RGB (WebP has no grey mode)"),
        _classical("jxl_lossless", "JPEG XL lossless", "pillow-jxl-plugin, lossless=True, "
                   "effort=7; greyscale as one channel"),
        _course_lossless("course-lossless", "LLCC lossless (course)",
                         lambda image: lossless.compress_lossless(image),
                         lambda data: lossless.decompress_lossless(data),
                         "the course's predictive lossless coder (course_lib.codecs.lossless), "
                         "defaults; greyscale as one plane"),
        _course_lossless("learned-lossless", "learned lossless (course)",
                         lambda image: lossless_learned.compress_learned(image),
                         lambda data: lossless_learned.decompress_learned(data),
                         "the course's learned lossless coder (course_lib.codecs.lossless_learned"
                         "): polyphase passes of a small CNN over LLCC, defaults; greyscale as "
                         "one plane"),
        _jpeg_filtered(),
    ]
    return {codec.name: codec for codec in table}


def default_codecs() -> list[str]:
    return [name for name, codec in codecs().items() if codec.default]


def parse_codecs(text: str) -> list[str]:
    """``"jpeg, png,learned"`` -> the names, checked; ``all`` and ``default`` are lists."""
    known = codecs()
    names = []
    for item in text.split(","):
        name = item.strip().lower().replace("_", "-")
        if not name:
            continue
        if name in ("all", "default"):
            names += list(known) if name == "all" else default_codecs()
        elif name in known:
            names.append(name)
        else:
            raise BenchError(f"unknown codec {item.strip()!r}; known codecs: "
                             f"{', '.join(known)} (or 'default', 'all')")
    if not names:
        raise BenchError(f"no codec given; known codecs: {', '.join(known)}")
    return list(dict.fromkeys(names))


def fingerprint(codec: BenchCodec) -> str:
    """What the codec's bytes depend on besides image and setting, as a short hash (part of
    the cache key): versions, options, weights."""
    import PIL

    from .codecs import learned, lossless, mini_jpeg

    if codec.name.startswith("learned") and not codec.lossless:
        loaded = _learned_model()  # WeightsError if the weights are missing or altered
        text = f"learned v{learned.VERSION} {loaded.name} {loaded.sha256} {codec.name}"
    elif codec.name == "mini-jpeg":
        text = f"mini-jpeg v{mini_jpeg.VERSION}"
    elif codec.name == "course-lossless":
        text = f"course-lossless v{lossless.VERSION}"
    elif codec.name == "learned-lossless":
        from . import weights
        from .codecs import lossless_learned

        model = lossless_learned.MODELS[lossless_learned.DEFAULT_MODEL]
        text = (f"learned-lossless v{lossless_learned.VERSION} {model} "
                f"{weights.checksums()[model]} llcc v{lossless.VERSION}")
    elif codec.name == "jpeg-filter":
        from . import cnn_jpeg, weights
        from .codecs import classical

        spec = classical.get_codec("jpeg")
        text = (f"jpeg-filter Pillow {PIL.__version__} {spec.options(spec.settings[-1])} "
                f"{weights.checksums()[cnn_jpeg.FILTER_FILE]}")
    else:
        from .codecs import classical

        spec = classical.get_codec(codec.name.replace("-", "_"))
        text = f"{codec.name} Pillow {PIL.__version__} {spec.options(spec.settings[-1])}"
        if spec.format == "JXL":
            from importlib.metadata import PackageNotFoundError, version

            try:
                text += f" pillow-jxl-plugin {version('pillow-jxl-plugin')}"
            except PackageNotFoundError:
                pass
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def unavailable(codec: BenchCodec) -> str | None:
    """Why the codec cannot run here, or None; checked without coding an image."""
    if codec.pillow_format == "JXL":
        from .codecs import classical

        try:
            classical.register_jpeg_xl()
        except ImportError as error:
            return str(error)
    elif codec.pillow_format:
        from PIL import features

        feature = _PILLOW_FEATURES[codec.pillow_format]
        if not features.check(feature):
            return (f"this Pillow ({features.version('pil')}) was built without "
                    f"{codec.pillow_format} support (PIL.features.check({feature!r}) is "
                    "False); install a Pillow build that has it")
    from .weights import WeightsError

    loaders = {"learned-lossless": _learned_lossless_model, "jpeg-filter": _jpeg_filter_model}
    loader = loaders.get(codec.name, _learned_model if codec.name.startswith("learned") else None)
    if loader is not None:
        try:
            loader()
        except (WeightsError, OSError) as error:
            return f"the {codec.name} weights cannot be loaded: {error}"
    return None


# ---------------------------------------------------------------------------------------------
# Images


@dataclass
class BenchImage:
    name: str
    path: Path
    pixels: np.ndarray  # uint8 (H, W, 3), or (H, W) for a greyscale file
    sha256: str  # of the pixels (mode, shape and values): the cache key
    notes: list[str]

    @property
    def rgb(self) -> np.ndarray:
        if self.pixels.ndim == 2:
            return np.repeat(self.pixels[..., None], 3, axis=2)
        return self.pixels

    @property
    def grey(self) -> bool:
        return self.pixels.ndim == 2


def _is_greyscale_file(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        return image.mode in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def pixels_sha256(pixels: np.ndarray) -> str:
    digest = hashlib.sha256(f"{pixels.dtype} {pixels.shape}".encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.hexdigest()


def find_images(folder: Path, log) -> tuple[list[BenchImage], list[str], list[str]]:
    """The readable images in ``folder`` (sorted by name), the files skipped as unreadable
    (with why) and the files ignored as not images by their names."""
    from .images import ImageError, load_image

    if not folder.is_dir():
        raise BenchError(f"no folder at {folder}" if not folder.exists() else
                         f"{folder} is a file; give the folder that holds the images")
    try:
        import pillow_jxl  # noqa: F401  (lets Pillow read .jxl inputs when installed)
    except ImportError:
        pass
    images, skipped, ignored = [], [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            ignored.append(path.name)
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                mode = "L" if _is_greyscale_file(path) else "RGB"
            except Exception:  # (load_image says what is wrong)
                mode = "RGB"
            try:
                pixels = load_image(path, mode)
            except (ImageError, OSError, ValueError) as error:
                skipped.append(f"{path.name}: {error}")
                log(f"skipped: {path.name}: {error}")
                continue
        notes = [str(warning.message) for warning in caught
                 if issubclass(warning.category, UserWarning)]
        for note in notes:
            log(f"warning: {note}")
        if mode == "L":
            notes.append("greyscale: lossy codecs get it as RGB (the grey in all three "
                         "channels); lossless codecs code it as grey where the format can")
        images.append(BenchImage(path.name, path, pixels, pixels_sha256(pixels), notes))
    return images, skipped, ignored


# ---------------------------------------------------------------------------------------------
# Measuring, with the cache


def measure(codec: BenchCodec, image: BenchImage, setting) -> dict:
    """One encode and decode, measured. Errors of the codec become the row's ``error``."""
    import torch

    from . import metrics
    from .images import to_tensor

    source = image.pixels if codec.lossless else image.rgb
    row = {"bytes": None, "psnr": None, "ms_ssim": None, "encode_s": None, "decode_s": None,
           "exact": None, "error": "", "note": ""}
    try:
        start = time.perf_counter()
        data = codec.encode(source, setting)
        row["encode_s"] = time.perf_counter() - start
        row["bytes"] = len(data)
        start = time.perf_counter()
        decoded = np.asarray(codec.decode(data))
        row["decode_s"] = time.perf_counter() - start
    except Exception as error:  # (one codec failing on one image is a result)
        row["error"] = f"{type(error).__name__}: {error}"
        return row
    if codec.lossless:
        if decoded.ndim == 3 and source.ndim == 2:
            reference = np.repeat(source[..., None], decoded.shape[2], axis=2)
            row["note"] = "greyscale stored as RGB by the format"
        else:
            reference = source
        row["exact"] = bool(decoded.shape == reference.shape
                            and np.array_equal(decoded, reference))
        if not row["exact"]:
            differ = (int(np.count_nonzero(np.any(decoded != reference, axis=-1)
                                           if decoded.ndim == 3 else decoded != reference))
                      if decoded.shape == reference.shape else None)
            row["error"] = ("not lossless: the decoded image differs from the original ("
                            + (f"{differ} pixels differ)" if differ is not None else
                               f"shape {decoded.shape} instead of {reference.shape})"))
        return row
    if decoded.shape != source.shape:
        row["error"] = f"decoded shape {decoded.shape} differs from the original {source.shape}"
        return row
    original, reconstruction = to_tensor(source), to_tensor(decoded)
    with torch.no_grad():
        row["psnr"] = metrics.psnr(original, reconstruction).item()
        try:
            row["ms_ssim"] = metrics.ms_ssim(original, reconstruction).item()
        except ValueError:  # shorter side of 160 pixels or less: no MS-SSIM
            row["ms_ssim"] = None
    if image.grey:
        row["note"] = "greyscale coded as RGB"
    return row


def _setting_text(setting) -> str:
    return "none" if setting is None else f"{setting:g}"


def cache_path(cache_dir: Path, image: BenchImage, codec: BenchCodec, setting, version: str
               ) -> Path:
    return cache_dir / (f"{image.sha256[:20]}_{codec.name}_{_setting_text(setting)}_"
                        f"{version}.json")


def _read_cache(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or cut short by an interruption: measured again
    return entry if isinstance(entry, dict) and "bytes" in entry else None


def _write_cache(path: Path, entry: dict) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(entry))
    partial.replace(path)


def _warm_up_image() -> np.ndarray:
    y, x = np.mgrid[:WARM_UP_SIZE, :WARM_UP_SIZE]
    return np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)


def _row(image: BenchImage, codec: BenchCodec, setting, measured: dict, cached: bool) -> dict:
    height, width = image.pixels.shape[:2]
    channels = 1 if image.grey else 3
    size = measured["bytes"]
    return {
        "image": image.name, "image_sha256": image.sha256[:16], "width": width,
        "height": height, "channels": channels, "codec": codec.name,
        "lossless": codec.lossless, "setting": setting, "bytes": size,
        "bpp": None if size is None else 8 * size / (height * width),
        "bpsp": None if size is None else 8 * size / (height * width * channels),
        "psnr": measured["psnr"], "ms_ssim": measured["ms_ssim"],
        "encode_s": measured["encode_s"], "decode_s": measured["decode_s"],
        "exact": measured["exact"], "error": measured["error"], "note": measured["note"],
        "cached": cached}


@dataclass
class RunResult:
    images: list[BenchImage]
    codecs: list[BenchCodec]
    rows: list[dict]
    skipped: list[str]
    ignored: list[str]
    left_out: dict[str, str]
    computed: int
    seconds: float


def run_codecs(images: list[BenchImage], names: list[str], cache_dir: Path, *,
               progress: bool = True, log=None) -> tuple[list[dict], dict[str, str], int,
                                                         list[BenchCodec]]:
    """Every codec on every image at every setting, from the cache where it can. Returns the
    rows, the codecs left out (name -> why), the number measured now and the codecs run."""
    from tqdm import tqdm

    log = log or _log
    cache_dir.mkdir(parents=True, exist_ok=True)
    chosen = [codecs()[name] for name in names]
    total = sum(len(codec.settings) for codec in chosen) * len(images)
    rows, left_out, computed, ran = [], {}, 0, []
    with tqdm(total=total, unit="file", disable=not progress, dynamic_ncols=True,
              file=sys.stderr) as bar:
        for codec in chosen:
            bar.set_postfix_str(codec.name)
            reason = unavailable(codec)
            if reason is None:
                try:
                    version = fingerprint(codec)
                except Exception as error:
                    reason = f"{type(error).__name__}: {error}"
            if reason is not None:
                left_out[codec.name] = reason
                log(f"note: codec {codec.name} left out: {reason}")
                bar.update(len(codec.settings) * len(images))
                continue
            tasks = [(image, setting, cache_path(cache_dir, image, codec, setting, version))
                     for image in images for setting in codec.settings]
            entries = {path: _read_cache(path) for _, _, path in tasks}
            if any(entry is None for entry in entries.values()):
                # Warm-up (libraries, first-call costs); a codec that fails here fails on the
                # images too, and is reported there.
                measure(codec, BenchImage("warm-up", Path(), _warm_up_image(), "", []),
                        codec.settings[0])
            codec_rows, failures = [], 0
            for image, setting, path in tasks:
                entry = entries[path]
                if entry is None:
                    entry = measure(codec, image, setting)
                    computed += 1
                    if entry["error"]:
                        failures += 1
                        if failures <= SHOWN_FAILURES:
                            log(f"failed: {codec.name} on {image.name} ({codec.setting_name} "
                                f"{_setting_text(setting)}): {entry['error']}")
                        if failures == SHOWN_FAILURES:
                            log(f"failed: further failures of {codec.name} are listed in "
                                "report.md only")
                    else:  # failures are measured again next time
                        _write_cache(path, {**entry, "codec": codec.name,
                                            "setting": setting, "version": version,
                                            "image_sha256": image.sha256})
                codec_rows.append(_row(image, codec, setting, entry,
                                       cached=entries[path] is not None))
                bar.update(1)
            rows += codec_rows
            ran.append(codec)
    return rows, left_out, computed, ran


# ---------------------------------------------------------------------------------------------
# Curves, BD-rates, tables


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a decibel scale, ``-10 log10(1 - MS-SSIM)``, as CompressAI plots it."""
    return math.inf if value >= 1 else -10 * math.log10(1 - value)


def mean_curves(rows: list[dict], lossy: list[BenchCodec]) -> tuple[dict, list[str], dict]:
    """Per lossy codec and setting the mean bpp, PSNR and MS-SSIM over the same images.

    The images are those every codec coded at every setting without error (codecs that
    failed on every image are left out: returned with why); the MS-SSIM means are over those
    of them large enough for MS-SSIM, with their own mean bpp.
    """
    table = {(r["image"], r["codec"], r["setting"]): r for r in rows}
    images = list(dict.fromkeys(r["image"] for r in rows))
    complete, dropped = {}, {}
    for codec in lossy:
        done = [image for image in images
                if all((image, codec.name, s) in table and not table[image, codec.name, s]
                       ["error"] for s in codec.settings)]
        if done:
            complete[codec.name] = done
        else:
            dropped[codec.name] = "no image was coded at every setting without error"
    common = [image for image in images if all(image in done for done in complete.values())]
    with_ms = [image for image in common
               if all(table[image, name, s]["ms_ssim"] is not None
                      for name in complete for s in codecs()[name].settings)]
    curves = {}
    for name in complete:
        points = []
        for setting in codecs()[name].settings:
            cells = [table[image, name, setting] for image in common]
            ms_cells = [table[image, name, setting] for image in with_ms]
            points.append({
                "setting": setting, "images": len(cells), "ms_ssim_images": len(ms_cells),
                "bpp": float(np.mean([c["bpp"] for c in cells])) if cells else math.nan,
                "psnr": float(np.mean([c["psnr"] for c in cells])) if cells else math.nan,
                "ms_ssim_bpp": (float(np.mean([c["bpp"] for c in ms_cells])) if ms_cells
                                else math.nan),
                "ms_ssim": (float(np.mean([c["ms_ssim"] for c in ms_cells])) if ms_cells
                            else math.nan)})
        curves[name] = points
    return curves, common, dropped


def bd_rates(curves: dict, metric: str) -> tuple[dict, dict[str, str], dict]:
    """:func:`bench.bd_rate_matrix` of the curves on ``metric`` ("psnr" or "ms_ssim", the
    latter in dB), the curves that cannot take part (with why) and those that do, as
    ``name -> (bpp, quality)``."""
    usable, problems = {}, {}
    for name, points in curves.items():
        if metric == "psnr":
            pairs = [(p["bpp"], p["psnr"]) for p in points]
        else:
            pairs = [(p["ms_ssim_bpp"], ms_ssim_db(p["ms_ssim"])) for p in points
                     if not math.isnan(p["ms_ssim"])]
        pairs = list(dict.fromkeys(pairs))  # settings that gave the same files: one point
        rate, quality = [p[0] for p in pairs], [p[1] for p in pairs]
        try:
            bench.bd_rate(rate, quality, rate, quality)  # bench's own checks of one curve
        except ValueError as error:
            problems[name] = str(error)
            continue
        usable[name] = (rate, quality)
    return bench.bd_rate_matrix(usable), problems, usable


def _overlap(usable: dict, test: str, reference: str) -> str:
    """The quality range two curves share (where their BD-rate is measured), as text."""
    if test not in usable or reference not in usable:
        return "n/a"
    low = max(min(usable[test][1]), min(usable[reference][1]))
    high = min(max(usable[test][1]), max(usable[reference][1]))
    return f"{low:.2f}..{high:.2f}" if low < high else "none"


def _number(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _percent(value) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.1f} %"


def _markdown(header: list[str], lines: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(cell) for cell in line) + " |" for line in lines]
    return out


def _write_csv(path: Path, header: list[str], lines: list[list]) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(lines)


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else repr(value)
    return value


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plot_curves(curves: dict, metric: str, path: Path, images: int) -> None:
    """Mean RD curves (``metric`` "psnr" or "ms_ssim") against bpp, as a PNG at 120 dpi."""
    from matplotlib.figure import Figure  # no pyplot: any backend, no window

    figure = Figure(figsize=(7.5, 5.2))
    axes = figure.add_subplot()
    for name, points in curves.items():
        x_key = "bpp" if metric == "psnr" else "ms_ssim_bpp"
        pairs = [(p[x_key], p[metric]) for p in points
                 if math.isfinite(p[x_key]) and math.isfinite(p[metric])]
        if pairs:
            axes.plot(*zip(*pairs, strict=True), marker="o", markersize=3,
                      label=codecs()[name].label)
    axes.set_xlabel("rate: bits per pixel (bpp) of the real file")
    if metric == "psnr":
        axes.set_ylabel("PSNR on 8-bit RGB (dB)")
        axes.set_title(f"PSNR vs rate: mean over {_count(images, 'image')} at each setting")
    else:
        axes.set_ylabel("MS-SSIM on RGB")
        axes.set_title(f"MS-SSIM vs rate: mean over {_count(images, 'image')} at each "
                       "setting")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------------------
# The report


def _machine() -> list[str]:
    import PIL
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        f"- device: CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} "
        f"CPUs, {cores} available to this process; load average {load} at the end",
        f"- threads: torch {torch.get_num_threads()} (the learned codec, mini-JPEG's "
        f"transforms); JPEG, PNG, WebP, JPEG 2000 and the course's lossless coder 1; AVIF "
        f"and JPEG XL up to all {cores} cores "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"Pillow {PIL.__version__}, {platform.system()} {platform.release()}",
    ]


def write_outputs(result: RunResult, out: Path, command: str) -> list[str]:
    """results.csv/json, the tables as CSV, the plots and report.md; returns the report's
    lines."""
    rows = result.rows
    with (out / "results.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=RESULT_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_cell(row[key]) for key in RESULT_FIELDS})
    (out / "results.json").write_text(json.dumps(
        [{key: _json_safe(row[key]) for key in RESULT_FIELDS} for row in rows], indent=1))

    lossy = [codec for codec in result.codecs if not codec.lossless]
    lossless = [codec for codec in result.codecs if codec.lossless]
    names = [image.name for image in result.images]
    lines = ["# Codec benchmark", "",
             f"`{command}`", "",
             f"{datetime.datetime.now().isoformat(timespec='seconds')}; "
             f"{_count(len(result.images), 'image')}; {len(rows)} measurements, "
             f"{result.computed} made "
             f"in this run ({result.seconds:.0f} s), {len(rows) - result.computed} from the "
             "cache (`cache/`, with the times measured when they were made).", "",
             "## Machine", "", *_machine(), "",
             "## How it is measured", "",
             "- rate: bits per pixel from the real bytes of each file, `8 * bytes / (H * W)`, "
             "headers included (bpsp: per subpixel, `/ (H * W * C)`, C = 1 for greyscale)",
             "- distortion: PSNR on 8-bit RGB (the decoded image as the file gives it), "
             "MS-SSIM on RGB in [0, 1] (only for images above 160 pixels on the shorter side)",
             "- curves: mean bpp and mean PSNR (MS-SSIM) of each setting over the same "
             "images (CompressAI's convention)",
             "- BD-rate: pchip of log-rate over the overlapping quality range "
             "(`course_lib.bench`); negative = fewer bits at equal quality; MS-SSIM in dB, "
             "`-10 log10(1 - MS-SSIM)`",
             "- time: wall clock per image, after one warm-up per codec on a small synthetic "
             "image; medians over images", "",
             "## Images", ""]
    lines += _markdown(["image", "size", "channels", "sha256 (pixels)", "notes"], [
        [image.name, f"{image.pixels.shape[1]}x{image.pixels.shape[0]}",
         1 if image.grey else 3, image.sha256[:12], "; ".join(image.notes) or ""]
        for image in result.images])
    if result.skipped:
        lines += ["", "Skipped (could not be read):", ""]
        lines += [f"- {entry}" for entry in result.skipped]
    if result.ignored:
        lines += ["", f"Ignored (not image files by their names): {', '.join(result.ignored)}"]
    lines += ["", "## Codecs and settings", ""]
    lines += _markdown(["codec", "kind", "settings"], [
        [codec.name, "lossless" if codec.lossless else "lossy", codec.description]
        for codec in result.codecs])
    for name, reason in result.left_out.items():
        lines += ["", f"Left out: **{name}**: {reason}"]
    if any(codec.name == "jpeg2000" for codec in result.codecs):
        lines += ["", "Note: JPEG 2000 here is OpenJPEG through Pillow (irreversible wavelet, "
                  "rate layers), which falls well short of published JPEG 2000 curves."]
    errors = [row for row in rows if row["error"]]
    files = ["results.csv", "results.json"]

    if lossy:
        curves, common, dropped = mean_curves(rows, lossy)
        lines += ["", "## Rate–distortion (lossy codecs)", ""]
        if len(common) < len(names):
            lines += [f"Curves over the {len(common)} images every lossy codec coded without "
                      f"error: {', '.join(common) or 'none'}.", ""]
        for name, reason in dropped.items():
            lines += [f"Not in the curves: {name}: {reason}.", ""]
        ms_images = max((p["ms_ssim_images"] for points in curves.values() for p in points),
                        default=0)
        if curves and common:
            plot_curves(curves, "psnr", out / "rd_psnr.png", len(common))
            lines += [f"![PSNR vs bpp](rd_psnr.png) (mean over "
                      f"{_count(len(common), 'image')} at each setting)", ""]
            files.append("rd_psnr.png")
            if ms_images:
                plot_curves(curves, "ms_ssim", out / "rd_ms_ssim.png", ms_images)
                lines += [f"![MS-SSIM vs bpp](rd_ms_ssim.png) (mean over "
                          f"{_count(ms_images, 'image')} at each setting)", ""]
                files.append("rd_ms_ssim.png")
            else:
                lines += ["No MS-SSIM curves: no image is larger than 160 pixels on its "
                          "shorter side.", ""]
        curve_lines = [[name, _setting_text(p["setting"]), _number(p["bpp"], 4),
                        _number(p["psnr"], 3), _number(p["ms_ssim"], 5), p["images"]]
                       for name, points in curves.items() for p in points]
        header = ["codec", "setting", "bpp", "PSNR (dB)", "MS-SSIM", "images"]
        _write_csv(out / "curves.csv", header, curve_lines)
        files.append("curves.csv")
        lines += ["<details><summary>Mean curves (also in <a href=\"curves.csv\">curves.csv"
                  "</a>)</summary>", ""]
        lines += _markdown(header, curve_lines)
        lines += ["", "</details>", ""]

        tables = {metric: bd_rates(curves, metric) for metric in ("psnr", "ms_ssim")}
        lines += ["## BD-rate against JPEG", ""]
        if "jpeg" in curves:
            jpeg_lines = [[name] + [cell for m in ("psnr", "ms_ssim") for cell in (
                _percent(tables[m][0].get((name, "jpeg"), math.nan)),
                _overlap(tables[m][2], name, "jpeg"))]
                for name in curves if name != "jpeg"]
            lines += _markdown(["codec", "BD-rate (PSNR)", "over PSNR (dB)",
                                "BD-rate (MS-SSIM dB)", "over MS-SSIM (dB)"], jpeg_lines)
            _write_csv(out / "bd_rate_vs_jpeg.csv", ["codec", "bd_rate_psnr_percent",
                                                     "bd_rate_ms_ssim_percent"],
                       [[n] + [tables[m][0].get((n, "jpeg"), math.nan)
                               for m in ("psnr", "ms_ssim")] for n in curves if n != "jpeg"])
            files.append("bd_rate_vs_jpeg.csv")
            lines.append("")
        else:
            lines += ["JPEG was not run (add `jpeg` to --codecs): no reference.", ""]
        for metric, title in (("psnr", "PSNR"), ("ms_ssim", "MS-SSIM (dB)")):
            matrix, problems, _ = tables[metric]
            members = [name for name in curves if name not in problems]
            lines += [f"## BD-rate matrix, {title}", "",
                      "Each row against each column; n/a: the curves share no quality range.",
                      ""]
            if len(members) >= 2:
                lines += _markdown(["codec \\ reference", *members], [
                    [test] + ["—" if test == ref else _percent(matrix[test, ref])
                              for ref in members] for test in members])
                _write_csv(out / f"bd_rate_matrix_{metric}.csv", ["codec", *members], [
                    [test] + ["" if test == ref else matrix[test, ref] for ref in members]
                    for test in members])
                files.append(f"bd_rate_matrix_{metric}.csv")
            else:
                lines.append("Fewer than two usable curves.")
            for name, problem in problems.items():
                lines += ["", f"{name} is not in this matrix: {problem}."]
            lines.append("")

    if lossless:
        lines += ["## Lossless codecs", ""]
        table_lines = []
        png = [row["bpsp"] for row in rows if row["codec"] == "png" and not row["error"]]
        for codec in lossless:
            good = [row for row in rows if row["codec"] == codec.name and not row["error"]]
            tried = [row for row in rows if row["codec"] == codec.name]
            bpsp = float(np.mean([row["bpsp"] for row in good])) if good else math.nan
            vs_png = (_percent(100 * (bpsp / np.mean(png) - 1))
                      if good and len(png) == len(good) and codec.name != "png" else "")
            table_lines.append([
                codec.name, _number(bpsp, 3), vs_png,
                _seconds(float(np.median([r["encode_s"] for r in good])) if good else None),
                _seconds(float(np.median([r["decode_s"] for r in good])) if good else None),
                f"{sum(bool(r['exact']) for r in tried)}/{len(tried)}"])
        header = ["codec", "bpsp (mean)", "vs PNG", "encode s (median)", "decode s (median)",
                  "exact"]
        lines += _markdown(header, table_lines)
        _write_csv(out / "lossless.csv", header, table_lines)
        files.append("lossless.csv")
        lines += ["", "bits per subpixel by image:", ""]
        by_image = {(r["image"], r["codec"]): r for r in rows if r["lossless"]}
        lines += _markdown(["image", *[c.name for c in lossless]], [
            [name] + [("error" if by_image[name, c.name]["error"] else
                       _number(by_image[name, c.name]["bpsp"], 3))
                      if (name, c.name) in by_image else "" for c in lossless]
            for name in names])
        lines.append("")

    lines += ["## Time per image", "",
              "Encode / decode seconds, median over the settings of each codec "
              "([times.csv](times.csv)); last line: median over images.", ""]
    time_lines, csv_lines = [], []
    medians = {}
    for name in names:
        cells = [name]
        for codec in result.codecs:
            good = [r for r in rows if r["image"] == name and r["codec"] == codec.name
                    and not r["error"]]
            if good:
                encode = float(np.median([r["encode_s"] for r in good]))
                decode = float(np.median([r["decode_s"] for r in good]))
                medians.setdefault(codec.name, []).append((encode, decode))
                cells.append(f"{_seconds(encode)} / {_seconds(decode)}")
                csv_lines.append([name, codec.name, len(good), encode, decode])
            else:
                cells.append("error")
        time_lines.append(cells)
    time_lines.append(["**median**"] + [
        (f"{_seconds(float(np.median([m[0] for m in medians[c.name]])))} / "
         f"{_seconds(float(np.median([m[1] for m in medians[c.name]])))}")
        if c.name in medians else ""
        for c in result.codecs])
    lines += _markdown(["image", *[c.name for c in result.codecs]], time_lines)
    _write_csv(out / "times.csv", ["image", "codec", "settings", "encode_s_median",
                                   "decode_s_median"], csv_lines)
    files.append("times.csv")

    if errors:
        lines += ["", "## Errors", "",
                  f"{len(errors)} measurements failed; they are in results.csv with their "
                  "error and count in no mean:", ""]
        lines += [f"- {r['codec']} on {r['image']} (setting {_setting_text(r['setting'])}): "
                  f"{r['error']}" for r in errors]
    lines += ["", "## Files", ""]
    lines += [f"- [{name}]({name})" for name in files]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return lines


# ---------------------------------------------------------------------------------------------
# The command


def _parser() -> argparse.ArgumentParser:
    import textwrap

    known = codecs()
    listing = "\n".join(textwrap.fill(
        f"{'lossless' if codec.lossless else 'lossy'}{'' if codec.default else ', opt-in'}: "
        f"{codec.description}", width=79, initial_indent=f"  {name:16s} ",
        subsequent_indent=" " * 19) for name, codec in known.items())
    parser = argparse.ArgumentParser(
        prog="python -m course_lib bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Benchmark codecs on a folder of your own images: real file sizes, PSNR and "
            "MS-SSIM per image and setting, mean RD curves, BD-rates against JPEG and "
            "between codecs, lossless bits per subpixel, times; written to --out with a "
            "report.md (see course_lib/benchmark.py).", width=79),
        epilog=f"codecs:\n{listing}\n\n" + textwrap.fill(
            "Results are cached in OUT/cache/ per image content, codec and setting: a rerun "
            "or an interrupted run computes only what is missing. Exit code 0; 1 if some "
            "measurements failed (see report.md); 2 for a problem with the arguments or the "
            "folder; 130 if interrupted.", width=79))
    parser.add_argument("--images", type=Path, required=True, metavar="DIR",
                        help="folder of images (PNG, JPEG, TIFF, WebP, ...; files directly "
                             "inside it; other files are ignored)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for the results, the plots and report.md (created)")
    parser.add_argument("--codecs", default="default", metavar="NAMES",
                        help="comma-separated codec names, 'default' or 'all' (default: "
                             f"{','.join(default_codecs())})")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads for the learned codec (default: torch's own)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _log(message: str) -> None:
    """One line on stderr that leaves the progress bar whole."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def run(images_dir: Path, names: list[str], out: Path, *, progress: bool = True,
        command: str = "python -m course_lib bench", log=None) -> RunResult:
    """The whole benchmark: find the images, run the codecs (cached), write the outputs."""
    log = log or _log
    started = time.perf_counter()
    if out.exists() and not out.is_dir():
        raise BenchError(f"{out} is a file; give a folder for --out")
    if out.resolve() == images_dir.resolve():
        raise BenchError("--out is the images folder; give another folder for the results "
                         "(its plots would be benchmarked next time)")
    images, skipped, ignored = find_images(images_dir, log)
    if not images:
        what = f"none of its {len(skipped)} image files could be read" if skipped else (
            f"no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
        raise BenchError(f"{images_dir}: {what}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BenchError(f"cannot create {out}: {error.strerror or error}") from None
    rows, left_out, computed, ran = run_codecs(images, names, out / "cache", progress=progress,
                                               log=log)
    if not ran:
        raise BenchError("none of the codecs can run here: "
                         + "; ".join(f"{name}: {why}" for name, why in left_out.items()))
    result = RunResult(images, ran, rows, skipped, ignored, left_out, computed,
                       time.perf_counter() - started)
    write_outputs(result, out, command)
    return result


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    command = "python -m course_lib bench " + " ".join(
        sys.argv[2:] if argv is None else list(argv))
    try:
        names = parse_codecs(args.codecs)
        result = run(args.images, names, args.out, progress=not args.no_progress,
                     command=command)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: what was measured is cached in {args.out / 'cache'}; the same "
              "command resumes from there", file=sys.stderr)
        return 130
    failed = sum(bool(row["error"]) for row in result.rows)
    print(f"{_count(len(result.images), 'image')}, {_count(len(result.codecs), 'codec')}, "
          f"{len(result.rows)} measurements ({result.computed} new); report: "
          f"{args.out / 'report.md'}")
    if failed:
        print(f"warning: {failed} measurements failed; see the Errors section of "
              f"{args.out / 'report.md'}", file=sys.stderr)
        return 1
    return 0
