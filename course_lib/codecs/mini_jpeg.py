"""Mini-JPEG: a working baseline-JPEG-style codec built from the course's own pieces.

Encoder, stage by stage (each stage is a function here, so notebook 05 can show it):

1. RGB -> YCbCr (:func:`course_lib.images.rgb_to_ycbcr`), shifted to -128..127;
   the image is padded (edge pixels repeated) to whole blocks; with 4:2:0 the two chroma
   planes are averaged over 2x2 pixels (:func:`course_lib.pooling.downsample`).
2. A transform per plane, giving one row of coefficients per block: the 8x8 DCT as a
   stride-8 convolution (:func:`course_lib.conv.block_dct`), read in zig-zag order; or the
   Haar DWT (:mod:`course_lib.wavelets`), read as one tree per coarsest coefficient.
3. Quantisation: each coefficient is divided by its step and rounded. The DCT steps are the
   JPEG tables of ITU T.81 Annex K scaled by the quality as the IJG library does, so quality
   ``q`` gives the very tables Pillow writes at ``quality=q``.
4. JPEG's symbols: the first coefficient of each block as its difference from the previous
   block's (DPCM), the others as (run of zeros, size) symbols with an end-of-block;
   each symbol is followed by ``size`` raw bits of the value.
5. Huffman codes made for this image (:class:`course_lib.entropy.HuffmanCode`, 16-bit limit,
   like Pillow's ``optimize=True``), one pair (DC, AC) for luma, one for chroma.

The file is not a JFIF file but carries the same information in the same spirit::

    header   "MJPG", version, transform, levels, quality, subsampling, height, width (13 bytes)
    per group (luma, chroma): DC code and AC code as JPEG's DHT tables (16 counts of codes of
             length 1..16, then the symbols), then the number of AC symbols and the byte
             lengths of the DC and AC Huffman data (3 x uint32)
    payload  per group: Huffman data of the DC symbols, of the AC symbols, then the raw bits
    CRC-32   of everything before it (uint32)

Integers are little-endian. Version 2 added the CRC-32 (JPEG itself has none, so a damaged
JPEG decodes to other pixels; here every damaged file is refused); version 1 files are refused
with a note to re-encode.

:func:`decode` raises :class:`~course_lib.entropy.DecodeError` for every file it cannot decode,
checking before it allocates or computes: the magic, the version, the CRC-32, the header's
fields, an image of at most :data:`~course_lib.images.MAX_PIXELS` pixels (``max_pixels=`` or
``$COURSE_MAX_PIXELS`` raise it), then each table and length against the bytes present. Each
block costs at least two bits (its DC symbol and its end-of-block), so a file of B bytes decodes
at most 4 B blocks: 256 B pixels with the DCT, 16384 B with 6 Haar levels.

Two simplifications against JPEG, each costing a few bytes: every block ends with an
end-of-block symbol (JPEG omits it after a last non-zero coefficient), and the Huffman data
and the raw bits are kept in separate streams rather than interleaved. (The separation lets
the decoder run the library's Huffman decoder once per stream and then place all values with
numpy, and it changes the size by at most a byte per stream.)
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch

from ..conv import block_dct, block_idct
from ..entropy import DecodeError, HuffmanCode
from ..images import check_pixel_count, pad_to_multiple, rgb_to_ycbcr, ycbcr_to_rgb
from ..pooling import downsample, upsample_bilinear
from ..wavelets import haar_dwt2, haar_idwt2
from .classical import check_rgb_image

# ITU T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), rows = vertical frequency.
LUMA_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
])
CHROMA_TABLE = np.full((8, 8), 99)
CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]

TRANSFORMS = ("dct", "haar")
SUBSAMPLINGS = ("4:4:4", "4:2:0")
DEFAULT_HAAR_LEVELS = 3
MAX_SIZE = 15  # sizes (bit counts of values) fit in 4 bits, as in JPEG's symbols
MAX_CODE_LENGTH = 16  # JPEG's limit on Huffman code lengths
EOB, ZRL = 0x00, 0xF0  # end of block; a run of 16 zeros

MAGIC = b"MJPG"
VERSION = 2
_HEADER = struct.Struct("<4sBBBBBHH")
_COUNTS = struct.Struct("<III")
_CRC = struct.Struct("<I")


# ---------------------------------------------------------------------------------------------
# Quantisation tables and scan order


def _check_quality(quality) -> int:
    if not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
    return int(quality)


def quality_scaling(quality: int) -> int:
    """The IJG library's percentage applied to the Annex K tables: ``5000 / q`` below 50,
    ``200 - 2 q`` from 50 on (so q = 50 is the tables themselves, q = 100 all ones)."""
    quality = _check_quality(quality)
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def quantization_table(quality: int, chroma: bool = False) -> np.ndarray:
    """The (8, 8) int64 table Pillow/libjpeg use at ``quality``: Annex K table times the
    scaling, rounded, clamped to 1..255 (baseline JPEG stores steps in one byte)."""
    base = CHROMA_TABLE if chroma else LUMA_TABLE
    return np.clip((base * quality_scaling(quality) + 50) // 100, 1, 255)


def haar_step(quality: int, chroma: bool = False) -> int:
    """One step for every Haar coefficient: the DC step of the JPEG table at ``quality``.

    The Haar basis is orthonormal like the DCT, so equal steps spend bits where they lower
    the squared error most; JPEG's larger steps at high frequencies are a perceptual choice.
    """
    return int(quantization_table(quality, chroma)[0, 0])


def zigzag_order(n: int = 8) -> np.ndarray:
    """(n*n,) row-major indices of an n x n block in JPEG's zig-zag order: anti-diagonals from
    the top left, alternately walked up and down, so low frequencies come first."""
    rows, cols = np.divmod(np.arange(n * n), n)
    diagonal = rows + cols
    return np.lexsort((np.where(diagonal % 2, rows, -rows), diagonal))


ZIGZAG = zigzag_order(8)


# ---------------------------------------------------------------------------------------------
# Colour planes


def _factor(subsampling: str) -> int:
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(f"subsampling must be one of {SUBSAMPLINGS}, got {subsampling!r}")
    return 2 if subsampling == "4:2:0" else 1


def _block_size(transform: str, levels: int) -> int:
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if transform == "dct":
        return 8
    if not isinstance(levels, (int, np.integer)) or not 1 <= levels <= 6:
        raise ValueError(f"Haar levels must be an integer in 1..6, got {levels!r}")
    return 2 ** int(levels)


def to_planes(image: np.ndarray, subsampling: str = "4:2:0", block: int = 8):
    """uint8 RGB ``(H, W, 3)`` -> level-shifted float64 planes ``luma (1, 1, H', W')`` and
    ``chroma (2, 1, H' / f, W' / f)``, padded so that every plane holds whole ``block`` x
    ``block`` blocks (f = 2 for 4:2:0, 1 for 4:4:4)."""
    factor = _factor(subsampling)
    ycbcr = rgb_to_ycbcr(check_rgb_image(image)) - 128.0
    x = torch.from_numpy(ycbcr).permute(2, 0, 1)[None]
    x, _ = pad_to_multiple(x, block * factor)
    chroma = x[:, 1:]
    if factor == 2:
        chroma = downsample(chroma, "average", 2)
    return x[:, :1], chroma.reshape(2, 1, *chroma.shape[2:])


def from_planes(luma: torch.Tensor, chroma: torch.Tensor, height: int, width: int
                ) -> np.ndarray:
    """Inverse of :func:`to_planes`: chroma upsampled bilinearly (libjpeg's "fancy
    upsampling"), YCbCr -> RGB, cropped to ``height x width``, rounded to uint8."""
    chroma = chroma.reshape(1, 2, *chroma.shape[2:])
    if chroma.shape[-2:] != luma.shape[-2:]:
        chroma = upsample_bilinear(chroma, size=tuple(luma.shape[-2:]))
    ycbcr = torch.cat([luma, chroma], dim=1)[0, :, :height, :width].permute(1, 2, 0)
    rgb = ycbcr_to_rgb(ycbcr.numpy() + 128.0)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Transforms: one row of coefficients per block, in coding order


def dct_blocks(planes: torch.Tensor) -> np.ndarray:
    """``planes (N, 1, H, W)`` -> ``(B, 64)`` DCT coefficients in zig-zag order, one row per
    8x8 block (plane by plane, blocks row by row)."""
    coefficients = block_dct(planes)  # (N, 64, H/8, W/8), channel = row-major frequency
    return coefficients.permute(0, 2, 3, 1).reshape(-1, 64).numpy()[:, ZIGZAG]


def dct_planes(blocks: np.ndarray, shape) -> torch.Tensor:
    """Inverse of :func:`dct_blocks` for planes of ``shape (N, 1, H, W)``."""
    count, _, height, width = shape
    natural = np.empty_like(blocks, dtype=np.float64)
    natural[:, ZIGZAG] = blocks
    coefficients = torch.from_numpy(natural).reshape(count, height // 8, width // 8, 64)
    return block_idct(coefficients.permute(0, 3, 1, 2))


def haar_blocks(planes: torch.Tensor, levels: int) -> np.ndarray:
    """``planes (N, 1, H, W)`` -> ``(B, 4**levels)`` Haar coefficients, one row per tree.

    A tree gathers one coefficient of the coarsest approximation and every detail
    coefficient below it: its ``2**(L-l) x 2**(L-l)`` patch of each band of level ``l``,
    coarsest level first. The trees cover disjoint ``2**L x 2**L`` squares of the image, so
    they play the part of JPEG's blocks, the approximation that of the DC.
    """
    approximation, details = haar_dwt2(planes, levels)
    count, _, rows, cols = approximation.shape
    parts = [approximation.reshape(count * rows * cols, 1)]
    for level, bands in zip(range(levels, 0, -1), details, strict=True):
        patch = 2 ** (levels - level)
        for band in bands:
            tiles = band.reshape(count, rows, patch, cols, patch).permute(0, 1, 3, 2, 4)
            parts.append(tiles.reshape(count * rows * cols, patch * patch))
    return torch.cat(parts, dim=1).numpy()


def haar_planes(blocks: np.ndarray, shape, levels: int) -> torch.Tensor:
    """Inverse of :func:`haar_blocks` for planes of ``shape (N, 1, H, W)``."""
    count, _, height, width = shape
    rows, cols = height >> levels, width >> levels
    blocks = torch.from_numpy(np.asarray(blocks, dtype=np.float64))
    approximation = blocks[:, 0].reshape(count, 1, rows, cols)
    details, start = [], 1
    for level in range(levels, 0, -1):
        patch = 2 ** (levels - level)
        bands = []
        for _ in range(3):
            tiles = blocks[:, start : start + patch * patch]
            tiles = tiles.reshape(count, rows, cols, patch, patch).permute(0, 1, 3, 2, 4)
            bands.append(tiles.reshape(count, 1, rows * patch, cols * patch))
            start += patch * patch
        details.append(tuple(bands))
    return haar_idwt2(approximation, details)


def quantization_steps(quality: int, transform: str = "dct", levels: int = 3,
                       chroma: bool = False) -> np.ndarray:
    """(K,) step of every coefficient of a block in coding order (K = 64 for the DCT,
    ``4**levels`` for Haar)."""
    if transform == "dct":
        return quantization_table(quality, chroma).reshape(-1)[ZIGZAG]
    size = _block_size(transform, levels)
    return np.full(size * size, haar_step(quality, chroma))


# ---------------------------------------------------------------------------------------------
# JPEG's symbols: DPCM of the DC, run/size of the AC, raw magnitude bits


def magnitude_size(values) -> np.ndarray:
    """JPEG's "size" (SSSS) of integers: the bit count of ``|v|``, 0 for 0."""
    return np.frexp(np.abs(np.asarray(values, dtype=np.int64)).astype(np.float64))[1]


def magnitude_bits(values, sizes) -> np.ndarray:
    """The ``size`` raw bits JPEG sends after a symbol: ``v`` itself if positive, else
    ``v + 2**size - 1`` (so the leading bit tells the sign)."""
    values, sizes = np.asarray(values, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
    return np.where(values < 0, values + (1 << sizes) - 1, values)


def values_from_bits(bits, sizes) -> np.ndarray:
    """Inverse of :func:`magnitude_bits`."""
    bits, sizes = np.asarray(bits, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
    negative = (sizes > 0) & (bits < (1 << np.maximum(sizes - 1, 0)))
    return np.where(negative, bits - (1 << sizes) + 1, bits)


def block_symbols(blocks: np.ndarray):
    """JPEG's symbols of quantised blocks ``(B, K)`` (coding order).

    Returns ``(dc_symbols (B,), dc_values (B,), ac_symbols (M,), ac_values (M,))``: the DC
    differences and their sizes; for the AC coefficients, in block order, ``ZRL`` (0xF0) for
    each full 16 zeros before a non-zero value, then ``run << 4 | size`` for the value with
    ``run < 16`` zeros before it, and ``EOB`` (0x00) to end every block. ``ac_values`` holds
    the value of each symbol (0 for ZRL and EOB). Symbols are int64 in 0..255.
    """
    blocks = np.asarray(blocks)
    if blocks.ndim != 2 or blocks.shape[1] < 2 or blocks.dtype.kind not in "iu":
        raise ValueError("blocks must be a (B, K) integer array with K >= 2")
    blocks = blocks.astype(np.int64)
    dc_values = np.diff(blocks[:, 0], prepend=0)
    ac = blocks[:, 1:]
    block, position = np.nonzero(ac)
    values = ac[block, position]
    starts_block = np.ones(block.size, dtype=bool)
    starts_block[1:] = block[1:] != block[:-1]
    previous = np.where(starts_block, -1, np.roll(position, 1))
    run = position - previous - 1
    sizes = magnitude_size(values)
    if max(sizes.max(initial=0), magnitude_size(dc_values).max()) > MAX_SIZE:
        raise ValueError(f"a value needs more than {MAX_SIZE} bits: steps too small")
    # Every event gets (block, key): ZRLs sit just before their value, the EOB after all.
    zrl_count = run // 16
    zrl_owner = np.repeat(np.arange(block.size), zrl_count)
    event_block = np.concatenate([block[zrl_owner], block, np.arange(blocks.shape[0])])
    event_key = np.concatenate([2 * position[zrl_owner], 2 * position + 1,
                                np.full(blocks.shape[0], 2 * ac.shape[1])])
    event_symbol = np.concatenate([np.full(zrl_owner.size, ZRL), (run % 16) << 4 | sizes,
                                   np.full(blocks.shape[0], EOB)])
    event_value = np.concatenate([np.zeros(zrl_owner.size, np.int64), values,
                                  np.zeros(blocks.shape[0], np.int64)])
    order = np.lexsort((event_key, event_block))
    return magnitude_size(dc_values), dc_values, event_symbol[order], event_value[order]


def blocks_from_symbols(dc_values, ac_symbols, ac_values, num_blocks: int, block_length: int
                        ) -> np.ndarray:
    """Inverse of :func:`block_symbols`: quantised blocks ``(num_blocks, block_length)``.

    Raises :class:`DecodeError` when the symbols do not describe exactly ``num_blocks``
    blocks of ``block_length`` coefficients.
    """
    ac_symbols = np.asarray(ac_symbols, dtype=np.int64)
    is_eob = ac_symbols == EOB
    if is_eob.sum() != num_blocks or (ac_symbols.size and not is_eob[-1]):
        raise DecodeError(f"the AC symbols end {int(is_eob.sum())} blocks, expected "
                          f"{num_blocks}: corrupted data")
    run, size = ac_symbols >> 4, ac_symbols & 15
    if np.any((size == 0) & ~is_eob & (ac_symbols != ZRL)):
        raise DecodeError("corrupted data: a run/size symbol of size 0 that is not ZRL or EOB")
    # Position after each symbol = running total of (run + 1), restarted at every block.
    step = np.where(is_eob, 0, run + 1)
    total = np.cumsum(step)
    block = np.cumsum(is_eob) - is_eob
    block_start = np.concatenate([[0], total[is_eob][:-1]])
    position = total - block_start[block]  # 1-based index among the AC coefficients
    if position.size and position.max() > block_length - 1:
        raise DecodeError(f"corrupted data: a block runs past its {block_length} coefficients")
    blocks = np.zeros((num_blocks, block_length), dtype=np.int64)
    blocks[:, 0] = np.cumsum(np.asarray(dc_values, dtype=np.int64))
    has_value = size > 0
    blocks[block[has_value], position[has_value]] = np.asarray(ac_values)[has_value]
    return blocks


def pack_bits(values, sizes) -> bytes:
    """Concatenate the low ``sizes[i]`` bits of each value (MSB first), pad with 1-bits."""
    values, sizes = np.asarray(values, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
    owner = np.repeat(np.arange(sizes.size), sizes)
    bit_index = np.arange(owner.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    bits = (values[owner] >> (sizes[owner] - 1 - bit_index)) & 1
    bits = np.concatenate([bits, np.ones(-bits.size % 8, dtype=np.int64)])
    return np.packbits(bits.astype(np.uint8)).tobytes()


def unpack_bits(data: bytes, sizes) -> np.ndarray:
    """Inverse of :func:`pack_bits`: (len(sizes),) int64 values."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if len(data) != -(-total // 8):
        raise DecodeError(f"{len(data)} bytes of raw bits, expected {-(-total // 8)}")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:total].astype(np.int64)
    owner = np.repeat(np.arange(sizes.size), sizes)
    bit_index = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    weights = bits << (sizes[owner] - 1 - bit_index)
    return np.bincount(owner, weights=weights, minlength=sizes.size).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Huffman tables in JPEG's DHT layout


def huffman_for(symbols: np.ndarray) -> HuffmanCode:
    """The optimal Huffman code (16-bit limit) for these symbols (0..255)."""
    return HuffmanCode.from_frequencies(np.bincount(symbols, minlength=256), MAX_CODE_LENGTH)


def table_bytes(code: HuffmanCode) -> bytes:
    """JPEG's DHT layout: 16 counts (codes of length 1..16), then the symbols sorted by
    (length, symbol). The canonical code is rebuilt from these alone."""
    lengths = code.lengths
    counts = np.bincount(lengths[lengths > 0], minlength=MAX_CODE_LENGTH + 1)[1:]
    used = np.flatnonzero(lengths)
    order = used[np.lexsort((used, lengths[used]))]
    return bytes(counts.astype(np.uint8)) + bytes(order.astype(np.uint8))


def read_table(data: bytes, offset: int) -> tuple[HuffmanCode, int]:
    """Parse a DHT table at ``offset``; returns the code and the offset after it."""
    if len(data) < offset + MAX_CODE_LENGTH:
        raise DecodeError("truncated mini-JPEG file: a Huffman table is cut short")
    counts = np.frombuffer(data, np.uint8, MAX_CODE_LENGTH, offset).astype(np.int64)
    offset += MAX_CODE_LENGTH
    total = int(counts.sum())
    if not 1 <= total <= 256 or len(data) < offset + total:
        raise DecodeError("corrupted or truncated mini-JPEG file: bad Huffman table")
    symbols = np.frombuffer(data, np.uint8, total, offset).astype(np.int64)
    if np.unique(symbols).size != total:
        raise DecodeError("corrupted mini-JPEG file: a Huffman table repeats a symbol")
    lengths = np.zeros(256, dtype=np.int64)
    lengths[symbols] = np.repeat(np.arange(1, MAX_CODE_LENGTH + 1), counts)
    try:
        return HuffmanCode(lengths), offset + total
    except ValueError as err:
        raise DecodeError(f"corrupted mini-JPEG file: bad Huffman table ({err})") from None


# ---------------------------------------------------------------------------------------------
# The codec


def _transform_blocks(planes, transform, levels):
    return dct_blocks(planes) if transform == "dct" else haar_blocks(planes, levels)


def _inverse_blocks(blocks, shape, transform, levels):
    if transform == "dct":
        return dct_planes(blocks, shape)
    return haar_planes(blocks, shape, levels)


def quantized_blocks(image: np.ndarray, quality: int = 50, transform: str = "dct",
                     subsampling: str = "4:2:0", levels: int = DEFAULT_HAAR_LEVELS):
    """Stages 1-3 of the encoder: ``(luma_blocks, chroma_blocks)`` int64 ``(B, K)``, the
    rounded coefficients in coding order (chroma: all Cb blocks, then all Cr blocks)."""
    quality = _check_quality(quality)
    block = _block_size(transform, levels)
    groups = []
    for chroma, planes in enumerate(to_planes(image, subsampling, block)):
        steps = quantization_steps(quality, transform, levels, bool(chroma))
        coefficients = _transform_blocks(planes, transform, levels)
        groups.append(np.round(coefficients / steps).astype(np.int64))
    return tuple(groups)


def encode(image: np.ndarray, quality: int = 50, transform: str = "dct",
           subsampling: str = "4:2:0", levels: int = DEFAULT_HAAR_LEVELS) -> bytes:
    """Compress a uint8 RGB image ``(H, W, 3)`` to mini-JPEG bytes.

    ``quality`` 1..100 means what it means for Pillow's JPEG; ``transform`` "dct" (8x8
    blocks) or "haar" (``levels`` of Haar DWT, trees of ``4**levels`` coefficients).
    """
    height, width = check_rgb_image(image).shape[:2]
    if max(height, width) > 65535:
        raise ValueError(f"image {height}x{width} is too large (at most 65535 per side)")
    groups = [encode_group(blocks) for blocks in
              quantized_blocks(image, quality, transform, subsampling, levels)]
    header = _HEADER.pack(MAGIC, VERSION, TRANSFORMS.index(transform),
                          levels if transform == "haar" else 0, quality,
                          SUBSAMPLINGS.index(subsampling), height, width)
    tables = [parts[name] for parts in groups for name in GROUP_TABLES]
    payload = [parts[name] for parts in groups for name in GROUP_PAYLOAD]
    body = b"".join([header, *tables, *payload])
    return body + _CRC.pack(zlib.crc32(body))


GROUP_TABLES = ("DC table", "AC table", "counts")
GROUP_PAYLOAD = ("DC symbols", "AC symbols", "raw bits")


def encode_group(blocks: np.ndarray) -> dict[str, bytes]:
    """Stages 4-5 for one group of quantised blocks ``(B, K)`` (luma, or chroma): the named
    parts of the file it contributes, in file order within :data:`GROUP_TABLES` (the Huffman
    tables and stream lengths) and :data:`GROUP_PAYLOAD` (the coded streams)."""
    dc_symbols, dc_values, ac_symbols, ac_values = block_symbols(blocks)
    dc_code, ac_code = huffman_for(dc_symbols), huffman_for(ac_symbols)
    dc_data, ac_data = dc_code.encode(dc_symbols), ac_code.encode(ac_symbols)
    values = np.concatenate([dc_values, ac_values])
    sizes = np.concatenate([dc_symbols, ac_symbols & 15])
    return {"DC table": table_bytes(dc_code), "AC table": table_bytes(ac_code),
            "counts": _COUNTS.pack(ac_symbols.size, len(dc_data), len(ac_data)),
            "DC symbols": dc_data, "AC symbols": ac_data,
            "raw bits": pack_bits(magnitude_bits(values, sizes), sizes)}


def _read_header(data: bytes, max_pixels: int | None):
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise DecodeError("not a mini-JPEG file: it does not start with b'MJPG'")
    _, version, transform, levels, quality, subsampling, height, width = (
        _HEADER.unpack_from(data))
    if version > VERSION:
        raise DecodeError(f"mini-JPEG version {version} is newer than this course_lib (version "
                          f"{VERSION}); update course_lib")
    if version != VERSION:
        raise DecodeError(f"mini-JPEG version {version} files have no checksum and are no "
                          f"longer read (this is version {VERSION}); re-encode the image")
    if len(data) < _HEADER.size + _CRC.size or zlib.crc32(data[: -_CRC.size]) != (
            _CRC.unpack_from(data, len(data) - _CRC.size)[0]):
        raise DecodeError("the mini-JPEG file is corrupted or truncated (checksum mismatch); "
                          "re-encode or re-download it")
    try:
        transform = TRANSFORMS[transform]
        subsampling = SUBSAMPLINGS[subsampling]
        block = _block_size(transform, levels)
        _check_quality(quality)
    except (IndexError, ValueError) as err:
        raise DecodeError(f"corrupted mini-JPEG header ({err})") from None
    if height == 0 or width == 0:
        raise DecodeError("corrupted mini-JPEG header: empty image")
    check_pixel_count(height, width, max_pixels, DecodeError, "the mini-JPEG image")
    return transform, levels, quality, subsampling, height, width, block


def decode(data: bytes, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode mini-JPEG bytes to a uint8 RGB image ``(H, W, 3)``.

    Raises :class:`course_lib.entropy.DecodeError` (a ``ValueError``) for bytes that are not
    a complete, intact mini-JPEG file (the checks are listed in the module docstring);
    ``max_pixels`` overrides the pixel limit (:func:`course_lib.images.check_pixel_count`).
    """
    data = bytes(data)
    transform, levels, quality, subsampling, height, width, block = _read_header(data,
                                                                                 max_pixels)
    data = data[: -_CRC.size]  # the checksum is checked: the rest is header, tables, payload
    factor = _factor(subsampling)
    unit = block * factor  # the encoder padded to whole units
    padded_h, padded_w = -(-height // unit) * unit, -(-width // unit) * unit
    shapes = [(1, 1, padded_h, padded_w), (2, 1, padded_h // factor, padded_w // factor)]
    offset, headers = _HEADER.size, []
    for _ in shapes:
        dc_code, offset = read_table(data, offset)
        ac_code, offset = read_table(data, offset)
        if len(data) < offset + _COUNTS.size:
            raise DecodeError("truncated mini-JPEG file: the stream lengths are cut short")
        headers.append((dc_code, ac_code, *_COUNTS.unpack_from(data, offset)))
        offset += _COUNTS.size
    planes = []
    for chroma, (shape, (dc_code, ac_code, num_ac, dc_bytes, ac_bytes)) in enumerate(
            zip(shapes, headers, strict=True)):
        num_blocks = shape[0] * (shape[2] // block) * (shape[3] // block)
        if num_ac > 2 * block * block * num_blocks or offset + dc_bytes + ac_bytes > len(data):
            raise DecodeError("corrupted or truncated mini-JPEG file: bad stream lengths")
        dc_symbols = dc_code.decode(data[offset : offset + dc_bytes], num_blocks)
        offset += dc_bytes
        ac_symbols = ac_code.decode(data[offset : offset + ac_bytes], num_ac)
        offset += ac_bytes
        sizes = np.concatenate([dc_symbols, ac_symbols & 15])
        raw_bytes = -(-int(sizes.sum()) // 8)
        values = values_from_bits(unpack_bits(data[offset : offset + raw_bytes], sizes), sizes)
        offset += raw_bytes
        blocks = blocks_from_symbols(values[:num_blocks], ac_symbols, values[num_blocks:],
                                     num_blocks, block * block)
        steps = quantization_steps(quality, transform, levels, bool(chroma))
        planes.append(_inverse_blocks(blocks * steps, shape, transform, levels))
    if offset != len(data):
        raise DecodeError(f"mini-JPEG file has {len(data) - offset} unexpected trailing bytes")
    return from_planes(*planes, height, width)

