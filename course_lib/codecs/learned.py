"""The course's learned codec as real files: a documented container and shipped weights.

File layout (all integers big-endian)::

    offset size  field
    0      4     magic b"LICC" (Learned Image Compression Course)
    4      1     format version (2)
    5      1     model id: index into SHIPPED_MODELS (the weights a decoder must load)
    6      8     first 8 bytes of the sha256 of the weights file
    14     2     image height H (1..65535)
    16     2     image width W (1..65535)
    18     1     bottom padding (pixels added to reach a multiple of the model's stride)
    19     1     right padding
    20     2     rate setting × 1000 (e.g. 1500 for rate 1.5)
    22     1     number of streams S
    23     4·S   length of each stream in bytes
    ..     ..    the S streams (hyperprior: y then z)
    end-4  4     CRC-32 of everything before it

``compress_image(image, quality) -> bytes`` and ``decompress_image(bytes) -> image`` take and
give uint8 RGB arrays of any size. Format versions: 1 coded each latent with the next wider
Gaussian of the scale table; 2 (current) with the nearest one in log, about 4 % smaller at
low rates. The two are not interchangeable, so a decoder refuses the other version.

A decoder checks a file before it computes anything from it, in this order: the length
(header and checksum at least), the magic, the version, the CRC-32, then the body: at least
one stream, room for the S length fields, the streams filling the file exactly, an image of
1..:data:`~course_lib.images.MAX_PIXELS` pixels (``max_pixels=`` or ``$COURSE_MAX_PIXELS``
raise it), a known model and its weights, padding below the model's stride, a rate in the
model's range. Work is then bounded by the file's size: a stream too short for the latents
the header implies is refused before they are decoded, since every latent costs at least the
bits of its table's likeliest value (:meth:`~course_lib.entropy.CdfTable.minimum_bits`; for
the shipped model, 36.6 bits per 64 x 64 block of the image for ``z`` alone, so a file of B
bytes decodes at most about 900 B pixels). Every problem with a file (wrong magic, other
weights, truncation, corruption, an image too large) raises :class:`CodecFileError` with what
to do.

Memory: big images are coded in tiles. Encoder and decoder run the model's transforms on one
tile of ``tile`` x ``tile`` pixels at a time (default :data:`DEFAULT_TILE`, 512), each with a
halo of context as wide as half the transform's receptive field (two latents, 32 pixels, for
``g_a`` and ``g_s``), and keep the tile's interior, which is exactly what the whole image gives
there (:func:`course_lib.models.run_in_tiles`). The file format does not depend on tiling: the
latents are those of the whole image and are entropy-coded as before, so the bytes are the same
for any tile size, and files written before tiling existed still decode (to pixels that can
differ by one level in rare places, see below). What the whole image still needs at once is the
8-bit image, the latents and their coding bookkeeping (about 20 bytes per pixel together),
besides one tile's activations (about 0.2 GB at 512 pixels) and PyTorch with the model
(0.6 GB). Untiled, the activations alone took about 350 bytes per pixel, 8 GB for a
24-megapixel photo; ``benchmarks/results/learned_codec_memory.txt`` has the peaks measured now
(about 1 GB at 12 megapixels, 1.2 to 1.3 GB at 24; they vary by about 0.1 GB from run to run
with the allocator's fragmentation).

Determinism: entropy decoding is bit-exact. The decoder picks the same table as the encoder for
every latent (scales from ``h_s`` in float64: see :mod:`course_lib.models`), and every stream
ends with a CRC-32 of its values, so a decoder that went wrong would raise
:class:`CodecFileError` rather than give other pixels. The pixels are the same with any number
of threads, in any process and with any ``tile``, on one kind of CPU with one PyTorch build:
the synthesis transform's layers sum in an order that depends on nothing else
(:mod:`course_lib.layers`; the tests decode Kodak images with 1, 2 and 3 threads and in a fresh
process, and images in tiles against whole; with tiles of 256 pixels all 96 files and decoded
images of ``benchmarks/results/learned_codec_tiles.txt`` are identical to untiled ones). One
source of last-bit differences remains in principle: ``y_hat = symbol + mean`` is rounded to
float32 from float64 means, whose last bits the BLAS library may compute differently for other
tile shapes or on tiny images; a difference of 1e-16 changes that rounding for about one latent
in 10^8, and a pixel then by one level at most (never seen in the tests). On another kind of
CPU, a GPU or another PyTorch version the pixels can differ by one level in rare places; the
decoded latents do not.
"""

from __future__ import annotations

import copy
import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import refine, weights
from ..entropy.errors import DecodeError
from ..images import ImageError, check_pixel_count, pad_to_multiple, to_uint8
from ..models import CompressionModel, build_model
from ..weights import WeightsError

MAGIC = b"LICC"
VERSION = 2
_HEADER = struct.Struct(">4sBB8sHHBBHB")
_CRC = struct.Struct(">I")

DEFAULT_TILE = 512  # pixels: see "Memory" in the module docstring
EFFORT_MAX_PIXELS = 4_000_000  # effort > 0 holds the whole image's activations and gradients

# Model ids are part of the file format: append, never reorder. 0: the mean-scale
# hyperprior; 1: the same with a checkerboard context model (three streams).
SHIPPED_MODELS = ("mean-scale-vr", "checkerboard-vr")
DEFAULT_MODEL = "checkerboard-vr"  # what compress_image codes with unless given a model


class CodecFileError(ValueError):
    """A file that this codec cannot decode; the message says why and what to do."""


@dataclass
class LoadedModel:
    name: str
    model: CompressionModel
    sha256: str
    config: dict


def save_weights(model: CompressionModel, config: dict, path: str | Path) -> str:
    """Write ``{"config", "state_dict"}`` and return the file's sha256.

    Floating-point tensors are stored in float16 (half the size, a negligible loss). The CDF
    tables are rebuilt from the float16-rounded parameters before saving, so that the loaded
    model finds its tables current and codes with exactly the integers in the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rounded = copy.deepcopy(model).cpu()
    with torch.no_grad():
        for tensor in rounded.parameters():
            tensor.copy_(tensor.half().float())
    rounded.update(force=True)
    state = {key: _to_half(value) for key, value in rounded.state_dict().items()}
    torch.save({"config": dict(config), "state_dict": state}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _to_half(value):
    if not isinstance(value, torch.Tensor):
        return value  # extra state: the integer CDF tables
    value = value.detach()
    return value.half() if value.dtype == torch.float32 else value


def load_weights(path: str | Path, expected_sha256: str | None = None) -> LoadedModel:
    """Load a weights file, verifying its sha256 first; ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise WeightsError(f"{path.name} is damaged or not the shipped file: sha256 "
                           f"{digest[:16]}… instead of {expected_sha256[:16]}…; restore it with "
                           f"`git checkout -- {path}` (or git lfs pull)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model = build_model(saved["config"])
    except ValueError as error:
        raise WeightsError(f"{path.name}: {error}") from None
    model.load_state_dict(saved["state_dict"])  # float16 values are copied into float32
    model.eval()
    return LoadedModel(path.stem, model, digest, saved["config"])


def weights_dir() -> Path:
    """The folder of the shipped codec (``mean-scale-vr.pt``, ``training/log.csv``), verified
    and fetched on first use (see :mod:`course_lib.weights`)."""
    return weights.folder("codec")


_loaded: dict[str, LoadedModel] = {}


def load_shipped(name: str | None = None) -> LoadedModel:
    """The shipped model ``name`` (default :data:`DEFAULT_MODEL`; cached), its sha256
    checked first (see :mod:`course_lib.weights`)."""
    name = name or DEFAULT_MODEL
    if name not in SHIPPED_MODELS:
        raise WeightsError(f"unknown model {name!r}; shipped: {SHIPPED_MODELS}")
    if name not in _loaded:
        _loaded[name] = load_weights(weights.path(f"codec/{name}.pt"))
    return _loaded[name]


def _rate_range(model: CompressionModel) -> tuple[float, float]:
    return 0.0, float(getattr(model, "num_rates", 1) - 1)


def lambda_at(config: dict, quality: float) -> float:
    """The rate–distortion trade-off λ a model was trained for at rate setting ``quality``
    (fractional settings: the geometric interpolation of their neighbours' λ, as the gains)."""
    lambdas = config.get("lambdas")
    if not lambdas:
        raise WeightsError("these weights do not record the λ they were trained for "
                           "(config['lambdas']); effort > 0 needs it")
    low = min(int(quality), len(lambdas) - 2) if len(lambdas) > 1 else 0
    if len(lambdas) == 1:
        return float(lambdas[0])
    weight = quality - low
    return float(np.exp((1 - weight) * np.log(lambdas[low]) + weight * np.log(lambdas[low + 1])))


def compress_image(image: np.ndarray, quality: float, loaded: LoadedModel | None = None, *,
                   tile: int | None = DEFAULT_TILE, effort: int = 0) -> bytes:
    """uint8 RGB ``(H, W, 3)`` -> bytes of a complete file at rate setting ``quality``.

    ``tile``: the transforms run on tiles of this many pixels square (a multiple of the
    model's :attr:`~course_lib.models.CompressionModel.multiple`, 64 for the shipped one; None:
    the whole image at once); the file is the same (see the module docstring).
    ``effort``: 0 codes the latents of the analysis transform (fast); 1 and 2 search for
    better latents for this image (:mod:`course_lib.refine`: :data:`~course_lib.refine.
    EFFORT_STEPS` steps, each a pass of the synthesis transform forwards and backwards), for
    smaller files at the same quality; images of at most :data:`EFFORT_MAX_PIXELS` pixels.
    The decoder is the same for every effort.
    """
    loaded = loaded or load_shipped()
    loaded.model.check_tile(tile)
    if isinstance(effort, bool) or effort not in range(len(refine.EFFORT_STEPS)):
        raise ValueError(f"effort must be one of 0..{len(refine.EFFORT_STEPS) - 1}, "
                         f"got {effort!r}")
    array = np.asarray(image)
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 4):
        raise ImageError("this codec codes RGB images: convert greyscale or RGBA first "
                         "(course_lib.images.load_image(path) returns RGB)")
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"expected a uint8 RGB array (H, W, 3), got {array.dtype} {array.shape}")
    height, width = array.shape[:2]
    if not (1 <= height <= 65535 and 1 <= width <= 65535):
        raise ImageError(f"image size {height}x{width} is outside 1..65535")
    low, high = _rate_range(loaded.model)
    if not low <= quality <= high:
        raise ValueError(f"quality must lie in [{low:g}, {high:g}] for {loaded.name}, "
                         f"got {quality}")
    quality = round(float(quality) * 1000) / 1000
    model_id = SHIPPED_MODELS.index(loaded.name) if loaded.name in SHIPPED_MODELS else 255
    # an 8-bit copy (the model converts it to float a tile at a time: a quarter of a float
    # copy), so that a read-only array (np.asarray of a PIL image) is taken as it is
    x = torch.from_numpy(np.array(array, order="C")).permute(2, 0, 1)[None]
    x, (pad_h, pad_w) = pad_to_multiple(x, loaded.model.multiple)
    rate = quality if high > 0 else None
    options = {}
    if effort:
        if not hasattr(loaded.model, "relaxed_terms"):
            raise ValueError(f"{loaded.name} has no encoder search: use effort=0")
        if height * width > EFFORT_MAX_PIXELS:
            raise ImageError(f"effort {effort} searches over the whole image at once and takes "
                             f"images of at most {EFFORT_MAX_PIXELS:,} pixels (this one has "
                             f"{height * width:,}); use effort=0 or code it in parts")
        options["latents"], _ = refine.refine_latents(
            loaded.model, x.float() / 255.0, rate, lambda_at(loaded.config, quality),
            refine.EFFORT_STEPS[effort], size=(height, width))
    result = loaded.model.compress(x, rate, tile, **options)
    streams = result["strings"]
    header = _HEADER.pack(MAGIC, VERSION, model_id, bytes.fromhex(loaded.sha256[:16]), height,
                          width, pad_h, pad_w, round(quality * 1000), len(streams))
    body = header + b"".join(struct.pack(">I", len(s)) for s in streams) + b"".join(streams)
    return body + _CRC.pack(zlib.crc32(body))


@dataclass
class FileInfo:
    model_id: int
    weights_prefix: str
    height: int
    width: int
    pad_h: int
    pad_w: int
    quality: float
    streams: list[bytes]


def parse(data: bytes, max_pixels: int | None = None) -> FileInfo:
    """Check and split a file into its fields (no decoding yet): the checks of the module
    docstring up to the image size. Raises :class:`CodecFileError`."""
    data = bytes(data)
    if len(data) < _HEADER.size + _CRC.size:
        raise CodecFileError(f"file too short ({len(data)} bytes) to be a course codec file")
    magic, version, model_id, prefix, height, width, pad_h, pad_w, quality, count = (
        _HEADER.unpack_from(data))
    if magic != MAGIC:
        raise CodecFileError("not a course codec file (wrong magic bytes); for PNG/JPEG use "
                             "course_lib.images.load_image")
    if version > VERSION:
        raise CodecFileError(f"file format version {version} is newer than this course_lib "
                             f"(version {VERSION}); update course_lib")
    if version != VERSION:
        raise CodecFileError(f"file format version {version} was written by an older "
                             f"course_lib (this is version {VERSION}); decode it with that "
                             "release or re-encode the original image")
    (stored_crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) != stored_crc:
        raise CodecFileError("the file is corrupted or truncated (checksum mismatch); "
                             "re-encode or re-download it")
    lengths_end = _HEADER.size + 4 * count
    if count == 0 or lengths_end + _CRC.size > len(data):
        raise CodecFileError(f"the file declares {count} streams, but its {len(data)} bytes "
                             "have no room for their lengths: corrupted file")
    lengths = struct.unpack_from(f">{count}I", data, _HEADER.size)
    if lengths_end + sum(lengths) + _CRC.size != len(data):
        raise CodecFileError("the file's stream lengths do not add up: corrupted file")
    streams, position = [], lengths_end
    for length in lengths:
        streams.append(data[position : position + length])
        position += length
    if height == 0 or width == 0:
        raise CodecFileError("the file declares an empty image: corrupted file")
    check_pixel_count(height, width, max_pixels, CodecFileError, "the file's image")
    return FileInfo(model_id, prefix.hex(), height, width, pad_h, pad_w, quality / 1000, streams)


def decompress_image(data: bytes, loaded: LoadedModel | None = None, *,
                     max_pixels: int | None = None, tile: int | None = DEFAULT_TILE
                     ) -> np.ndarray:
    """Bytes of a file from :func:`compress_image` -> uint8 RGB ``(H, W, 3)``.

    Raises :class:`CodecFileError` for any file it cannot decode (see the module docstring);
    ``max_pixels`` overrides the pixel limit (:func:`course_lib.images.check_pixel_count`);
    ``tile`` as in :func:`compress_image` (the same pixels for any tile size).
    """
    info = parse(data, max_pixels)
    if loaded is None:
        if info.model_id >= len(SHIPPED_MODELS):
            raise CodecFileError(f"file made with unknown model id {info.model_id}; pass the "
                                 "model it was made with (loaded=...)")
        loaded = load_shipped(SHIPPED_MODELS[info.model_id])
    loaded.model.check_tile(tile)
    if loaded.sha256[:16] != info.weights_prefix:
        raise CodecFileError(f"file was made with other weights (sha256 {info.weights_prefix}…)"
                             f" than {loaded.name} ({loaded.sha256[:16]}…); decode it with the "
                             "weights that made it")
    multiple = loaded.model.multiple
    padded_h, padded_w = info.height + info.pad_h, info.width + info.pad_w
    if padded_h % multiple or padded_w % multiple or info.pad_h >= multiple or (
            info.pad_w >= multiple):
        raise CodecFileError("the file's size and padding are inconsistent: corrupted file")
    low, high = _rate_range(loaded.model)
    if not low <= info.quality <= high:
        raise CodecFileError(f"the file's rate setting {info.quality} is outside the model's "
                             f"range [{low:g}, {high:g}]: corrupted file")
    # The coded latents are 1/multiple of the padded size: y (factorized) or z (hyperprior).
    latent_shape = (padded_h // multiple, padded_w // multiple)
    rate = info.quality if high > 0 else None
    try:
        pieces = loaded.model.decompress_tiles(info.streams, latent_shape, rate, tile)
    except (DecodeError, ValueError) as error:
        raise CodecFileError(f"the file's data could not be decoded ({error}): corrupted "
                             "file") from None
    image = np.empty((info.height, info.width, 3), dtype=np.uint8)
    for rows, cols, piece in pieces:
        inside = image[rows, cols]  # the piece less the padding
        inside[...] = to_uint8(piece)[: inside.shape[0], : inside.shape[1]]
    return image
