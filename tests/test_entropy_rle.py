"""Run lengths against itertools.groupby; PackBits against Apple's example and Pillow's TIFF."""

import io
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from course_lib.entropy import (
    DecodeError,
    expand_runs,
    packbits_decode,
    packbits_encode,
    run_lengths,
)

# Apple Technical Note TN1023: the PackBits example, unpacked and packed
APPLE_UNPACKED = bytes.fromhex("AAAAAA80002AAAAAAAAA80002A22" + "AA" * 10)
APPLE_PACKED = bytes.fromhex("FEAA0280002AFDAA0380002A22F7AA")


def _runny(seed: int, size: int, alphabet: int = 4) -> np.ndarray:
    """Random values with long runs, as in a binary image row or zig-zagged coefficients."""
    rng = np.random.default_rng(seed)
    lengths = rng.geometric(0.05, size=size)
    return np.repeat(rng.integers(0, alphabet, size), lengths)[:size]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 500))
def test_run_lengths_match_groupby_and_round_trip(seed, size):
    values = _runny(seed, size)
    run_values, lengths = run_lengths(values)
    groups = [(key, len(list(group))) for key, group in itertools.groupby(values.tolist())]
    assert list(zip(run_values.tolist(), lengths.tolist(), strict=True)) == groups
    np.testing.assert_array_equal(expand_runs(run_values, lengths), values)


def test_run_length_arguments_are_checked():
    with pytest.raises(ValueError):
        run_lengths(np.zeros((2, 2)))
    with pytest.raises(ValueError):
        expand_runs([1, 2], [3, 0])


def test_packbits_matches_apple_example():
    assert packbits_encode(APPLE_UNPACKED) == APPLE_PACKED
    assert packbits_decode(APPLE_PACKED) == APPLE_UNPACKED


@settings(max_examples=60, deadline=None)
@given(data=st.one_of(
    st.binary(max_size=600),
    st.integers(0, 2**32 - 1).map(lambda seed: bytes(_runny(seed, 700, 256).astype(np.uint8))),
))
def test_packbits_round_trip(data):
    packed = packbits_encode(data)
    assert packbits_decode(packed, expected_size=len(data)) == data
    # literals cost one header byte per 128 bytes, runs never expand
    assert len(packed) <= len(data) + -(-len(data) // 128)


def test_packbits_compresses_runs():
    data = bytes(_runny(1, 20000).astype(np.uint8))
    assert len(packbits_encode(data)) < len(data) / 5


def test_packbits_decodes_pillow_tiff():
    """Pillow (libtiff) writes PackBits TIFF strips; our decoder must unpack them exactly."""
    rng = np.random.default_rng(2)
    image = _runny(3, 96 * 40, 256).reshape(96, 40).astype(np.uint8)
    image[::7] = rng.integers(0, 256, (len(image[::7]), 40))  # some incompressible rows
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="TIFF", compression="packbits")
    tiff = Image.open(io.BytesIO(buffer.getvalue()))
    assert tiff.info["compression"] == "packbits"
    file = buffer.getvalue()
    strips = b"".join(
        packbits_decode(file[offset : offset + count])
        for offset, count in zip(tiff.tag_v2[273], tiff.tag_v2[279], strict=True)
    )
    assert strips == image.tobytes()


def test_packbits_bad_input_raises():
    with pytest.raises(DecodeError, match="truncated"):
        packbits_decode(APPLE_PACKED[:-1])  # a run header without its byte
    with pytest.raises(DecodeError, match="truncated"):
        packbits_decode(bytes([5, 1, 2]))  # a literal of 6 with 2 bytes
    with pytest.raises(DecodeError, match="expected"):
        packbits_decode(APPLE_PACKED, expected_size=len(APPLE_UNPACKED) + 1)
    assert packbits_decode(bytes([128])) == b""  # header 128 is a no-op
