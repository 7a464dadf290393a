"""Run-length coding: a run of equal values is sent once, with its length.

:func:`run_lengths` / :func:`expand_runs` work on any 1-D integer array (a row of a binary
image, a zig-zag scanned block of quantised coefficients). :func:`packbits_encode` is a real
byte format, PackBits (Apple, used by TIFF): a header byte ``h`` followed by either ``h + 1``
literal bytes (``0 <= h <= 127``) or one byte repeated ``257 - h`` times (``129 <= h <= 255``;
``h = 128`` is a no-op).
"""

from __future__ import annotations

import numpy as np

from .errors import DecodeError

MAX_PACKET = 128  # longest literal or run one PackBits header can announce
MIN_RUN = 3  # shorter runs stay inside literals: a 2-run would cost as much as 2 literals


def run_lengths(values) -> tuple[np.ndarray, np.ndarray]:
    """Split a 1-D array into maximal runs.

    Returns:
        run_values: (R,) the value of each run; run_lengths: (R,) int64 lengths >= 1.
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"run_lengths needs a 1-D array, got shape {values.shape}")
    if values.size == 0:
        return values[:0], np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    return values[starts], np.diff(np.append(starts, values.size))


def expand_runs(run_values, run_lengths) -> np.ndarray:
    """Inverse of :func:`run_lengths`."""
    run_values, run_lengths = np.asarray(run_values), np.asarray(run_lengths)
    if run_values.shape != run_lengths.shape or run_values.ndim != 1:
        raise ValueError("run_values and run_lengths must be 1-D arrays of the same length")
    if run_lengths.size and (run_lengths.dtype.kind not in "iu" or run_lengths.min() < 1):
        raise ValueError("run lengths must be positive integers")
    return np.repeat(run_values, run_lengths)


def packbits_encode(data: bytes) -> bytes:
    """PackBits: runs of 3 or more equal bytes become run packets, the rest literal packets."""
    values, lengths = run_lengths(np.frombuffer(bytes(data), dtype=np.uint8))
    out, literal = bytearray(), bytearray()

    def flush_literal():
        for start in range(0, len(literal), MAX_PACKET):
            chunk = literal[start : start + MAX_PACKET]
            out.append(len(chunk) - 1)
            out.extend(chunk)
        literal.clear()

    for value, length in zip(values.tolist(), lengths.tolist(), strict=True):
        if length < MIN_RUN:
            literal.extend([value] * length)
            continue
        flush_literal()
        while length:
            # never leave a tail run of 1 or 2 bytes: it goes into a literal packet instead
            packet = min(length, MAX_PACKET)
            if packet < MIN_RUN:
                literal.extend([value] * packet)
            else:
                out.extend([257 - packet, value])
            length -= packet
    flush_literal()
    return bytes(out)


def packbits_decode(data: bytes, expected_size: int | None = None) -> bytes:
    """Inverse of :func:`packbits_encode` (and of any PackBits encoder).

    Raises :class:`DecodeError` when a packet is cut short or, with ``expected_size``, when
    the output has another length.
    """
    data = bytes(data)
    out = bytearray()
    position = 0
    while position < len(data):  # every packet consumes at least its header byte
        header = data[position]
        position += 1
        if header < 128:
            end = position + header + 1
            if end > len(data):
                raise DecodeError(f"truncated PackBits data: literal at byte {position - 1}")
            out += data[position:end]
            position = end
        elif header > 128:
            if position == len(data):
                raise DecodeError(f"truncated PackBits data: run at byte {position - 1}")
            out += bytes([data[position]]) * (257 - header)
            position += 1
    if expected_size is not None and len(out) != expected_size:
        raise DecodeError(f"PackBits data decodes to {len(out)} bytes, expected {expected_size}")
    return bytes(out)
