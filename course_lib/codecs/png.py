"""PNG's five filters and deflate, written out: what a PNG file is made of (notebook 09).

A PNG encoder turns each row of bytes (RGB: ``R G B R G B ...``) into a *filtered* row, one of
five predictions subtracted modulo 256 (PNG specification, section 9), and then compresses all
rows, each led by its filter-type byte, with deflate (zlib). The prediction of byte ``x`` uses
``a``, the same colour of the pixel to the left, ``b`` the byte above and ``c`` the byte above
``a`` (0 outside the image):

=====  ========  ==========================================
type   name      prediction
=====  ========  ==========================================
0      None      0
1      Sub       a
2      Up        b
3      Average   floor((a + b) / 2)
4      Paeth     whichever of a, b, c is closest to a + b - c
=====  ========  ==========================================

:func:`png_file` writes a real PNG with one filter for all rows (or the usual "adaptive"
choice per row: the filter with the smallest sum of absolute filtered bytes, libpng's
heuristic); Pillow reads it back (tests check the pixels), and its size is what section 1 of
notebook 09 measures per filter.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

FILTERS = ("None", "Sub", "Up", "Average", "Paeth")
ADAPTIVE = "adaptive"


def paeth(a, b, c) -> np.ndarray:
    """PNG's Paeth predictor, elementwise: of ``a``, ``b``, ``c`` the one closest to
    ``a + b - c`` (ties go to ``a``, then ``b``)."""
    a, b, c = (np.asarray(v, dtype=np.int32) for v in (a, b, c))
    estimate = a + b - c
    da, db, dc = np.abs(estimate - a), np.abs(estimate - b), np.abs(estimate - c)
    return np.where((da <= db) & (da <= dc), a, np.where(db <= dc, b, c))


def predictions(image: np.ndarray, kind: str) -> np.ndarray:
    """int32 predictions of every byte of a uint8 ``(H, W)`` or ``(H, W, 3)`` image by the
    filter named ``kind`` (one of :data:`FILTERS`), with PNG's zeros outside the image."""
    x = np.asarray(image, dtype=np.int32)
    if x.ndim == 2:
        x = x[..., None]
    a = np.zeros_like(x)
    a[:, 1:] = x[:, :-1]
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    c = np.zeros_like(x)
    c[1:, 1:] = x[:-1, :-1]
    if kind not in FILTERS:
        raise ValueError(f"unknown PNG filter {kind!r}; the filters are {FILTERS}")
    prediction = {"None": lambda: np.zeros_like(x), "Sub": lambda: a, "Up": lambda: b,
                  "Average": lambda: (a + b) // 2, "Paeth": lambda: paeth(a, b, c)}[kind]()
    return prediction.reshape(np.shape(image))


def filtered(image: np.ndarray, kind: str) -> np.ndarray:
    """uint8 filtered bytes (``x - prediction`` modulo 256), the shape of ``image``."""
    return ((np.asarray(image, dtype=np.int32) - predictions(image, kind)) % 256).astype(
        np.uint8)


def scanlines(image: np.ndarray, kind: str = ADAPTIVE) -> bytes:
    """The bytes deflate compresses: each row's filter type, then its filtered bytes.
    ``kind``: one of :data:`FILTERS` for every row, or ``"adaptive"`` for each row the
    filter whose filtered bytes, read as signed, have the smallest sum of magnitudes."""
    image = np.asarray(image, dtype=np.uint8)
    rows = image.reshape(image.shape[0], -1)
    kinds = FILTERS if kind == ADAPTIVE else (kind,)
    candidates = np.stack([filtered(image, k).reshape(rows.shape) for k in kinds])
    if kind == ADAPTIVE:
        cost = np.abs(candidates.astype(np.int8).astype(np.int32)).sum(axis=2)
        choice = np.argmin(cost, axis=0)
    else:
        choice = np.zeros(rows.shape[0], np.int64)
    types = np.array([FILTERS.index(k) for k in kinds], np.uint8)[choice]
    chosen = candidates[choice, np.arange(rows.shape[0])]
    return np.concatenate([types[:, None], chosen], axis=1).tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data))


def png_file(image: np.ndarray, kind: str = ADAPTIVE, level: int = 9) -> bytes:
    """A complete PNG file (8-bit greyscale or RGB, one IDAT chunk) of a uint8 image, its
    rows filtered by ``kind`` (see :func:`scanlines`) and deflated at zlib ``level``."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
            image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"png_file takes uint8 (H, W) or (H, W, 3) arrays, got {image.dtype} "
                         f"{image.shape}")
    height, width = image.shape[:2]
    colour_type = 0 if image.ndim == 2 else 2
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(scanlines(image, kind), level))
            + _chunk(b"IEND", b""))
