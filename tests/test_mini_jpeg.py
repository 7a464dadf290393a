"""Mini-JPEG: tables against Pillow, symbols against a loop written from ITU T.81, round trips,
the rate-distortion margin to Pillow's JPEG, and a decoder that refuses bad bytes clearly."""

import io
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from course_lib import bench, metrics
from course_lib.codecs import classical
from course_lib.codecs import mini_jpeg as mj
from course_lib.entropy import DecodeError
from course_lib.images import sample_image, to_tensor

# ITU T.81 Figure A.6: the zig-zag sequence as row-major indices.
T81_ZIGZAG = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
    20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58,
    59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
]


@pytest.fixture(scope="module")
def photo():
    return sample_image("astronaut")[96:288, 128:400]  # (192, 272, 3): not a multiple of 16


def _pillow_tables(quality):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG", quality=quality)
    with Image.open(buffer) as image:
        return [np.array(image.quantization[i]).reshape(8, 8) for i in (0, 1)]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 100))
def test_tables_are_pillows(quality):
    luma, chroma = _pillow_tables(quality)
    np.testing.assert_array_equal(mj.quantization_table(quality), luma)
    np.testing.assert_array_equal(mj.quantization_table(quality, chroma=True), chroma)


def test_zigzag_is_the_standards():
    np.testing.assert_array_equal(mj.ZIGZAG, T81_ZIGZAG)
    np.testing.assert_array_equal(mj.zigzag_order(2), [0, 1, 2, 3])


def test_magnitude_coding_examples():
    # T.81 Table F.1 and F.1.2.1: size 2 covers -3,-2,2,3; negatives are sent as v + 2**s - 1
    values = np.array([0, 1, -1, 2, -3, 3, 255, -256, 1023])
    sizes = mj.magnitude_size(values)
    np.testing.assert_array_equal(sizes, [0, 1, 1, 2, 2, 2, 8, 9, 10])
    np.testing.assert_array_equal(mj.magnitude_bits(values, sizes),
                                  [0, 1, 0, 2, 0, 3, 255, 255, 1023])
    np.testing.assert_array_equal(mj.values_from_bits(mj.magnitude_bits(values, sizes), sizes),
                                  values)


def _symbols_by_loop(blocks):
    """T.81 F.1.2 written as loops (with an EOB after every block, as mini-JPEG does)."""
    dc_values, ac_symbols, ac_values, previous_dc = [], [], [], 0
    for block in blocks.tolist():
        dc_values.append(block[0] - previous_dc)
        previous_dc = block[0]
        run = 0
        for value in block[1:]:
            if value == 0:
                run += 1
                continue
            while run > 15:
                ac_symbols.append(0xF0)
                ac_values.append(0)
                run -= 16
            ac_symbols.append(run << 4 | abs(value).bit_length())
            ac_values.append(value)
            run = 0
        ac_symbols.append(0x00)
        ac_values.append(0)
    sizes = [abs(v).bit_length() for v in dc_values]
    return sizes, dc_values, ac_symbols, ac_values


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.sampled_from([4, 16, 64, 256]), st.floats(0.0, 1.0),
       st.integers(0, 2**31))
def test_symbols_match_the_loop_and_invert(num_blocks, length, density, seed):
    rng = np.random.default_rng(seed)
    blocks = rng.integers(-600, 600, (num_blocks, length))
    blocks[rng.random(blocks.shape) > density] = 0
    got = mj.block_symbols(blocks)
    for ours, theirs in zip(got, _symbols_by_loop(blocks), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    back = mj.blocks_from_symbols(got[1], got[2], got[3], num_blocks, length)
    np.testing.assert_array_equal(back, blocks)


def test_symbols_of_a_worked_block():
    block = np.zeros((1, 64), dtype=np.int64)
    block[0, [0, 1, 3, 20]] = [-5, 3, -1, 2]  # zeros: 1 before -1, 16 + 0 before 2
    sizes, dc, ac, values = mj.block_symbols(block)
    assert sizes.tolist() == [3] and dc.tolist() == [-5]
    assert ac.tolist() == [0x02, 0x11, 0xF0, 0x02, 0x00]
    assert values.tolist() == [3, -1, 0, 2, 0]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 15), max_size=40), st.integers(0, 2**31))
def test_pack_bits_against_strings(sizes, seed):
    rng = np.random.default_rng(seed)
    values = [int(rng.integers(0, 2**s)) if s else 0 for s in sizes]
    bits = "".join(format(v, f"0{s}b") if s else "" for v, s in zip(values, sizes, strict=True))
    bits += "1" * (-len(bits) % 8)
    expected = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    data = mj.pack_bits(values, sizes)
    assert data == expected
    np.testing.assert_array_equal(mj.unpack_bits(data, sizes), values)


def test_huffman_table_bytes_round_trip():
    symbols = np.random.default_rng(0).geometric(0.2, 5000).clip(0, 255)
    code = mj.huffman_for(symbols)
    rebuilt, end = mj.read_table(mj.table_bytes(code) + b"tail", 0)
    np.testing.assert_array_equal(rebuilt.lengths, code.lengths)
    assert end == 16 + np.count_nonzero(code.lengths)


@pytest.mark.parametrize("levels", [1, 3])
def test_haar_trees_invert(levels):
    import torch

    planes = torch.rand(2, 1, 8 * 2**levels, 4 * 2**levels, dtype=torch.float64)
    blocks = mj.haar_blocks(planes, levels)
    assert blocks.shape == (2 * 32, 4**levels)
    torch.testing.assert_close(mj.haar_planes(blocks, planes.shape, levels), planes)
    np.testing.assert_allclose(mj.dct_planes(mj.dct_blocks(planes), planes.shape).numpy(),
                               planes.numpy(), atol=1e-9)


def _decoded_from_quantised(image, quality, transform="dct", subsampling="4:2:0", levels=3):
    """What a decoder must output: the encoder's own rounded coefficients (stages 1-3, no
    entropy coding) times their steps, transformed back, upsampled and converted to RGB."""
    block = 8 if transform == "dct" else 2**levels
    planes = mj.to_planes(image, subsampling, block)
    groups = mj.quantized_blocks(image, quality, transform, subsampling, levels)
    restored = []
    for chroma, (plane, blocks) in enumerate(zip(planes, groups, strict=True)):
        coefficients = blocks * mj.quantization_steps(quality, transform, levels, bool(chroma))
        restored.append(mj.dct_planes(coefficients, plane.shape) if transform == "dct"
                        else mj.haar_planes(coefficients, plane.shape, levels))
    return mj.from_planes(*restored, *image.shape[:2])


# Measured now at quality 75 on the test photo: file bytes and PSNR (dB). The windows (1 % of
# the size, 0.05 dB) allow a coefficient rounded the other way on another CPU, not a change
# of the codec.
ROUND_TRIPS = {("dct", "4:2:0"): (8534, 34.30), ("dct", "4:4:4"): (10129, 35.24),
               ("haar", "4:2:0"): (14964, 38.04)}


@pytest.mark.parametrize("transform,subsampling", sorted(ROUND_TRIPS))
def test_round_trip(photo, transform, subsampling):
    data = mj.encode(photo, 75, transform, subsampling)
    decoded = mj.decode(data)
    assert decoded.dtype == np.uint8
    # the entropy coding is lossless: the decoder gets back exactly the quantised coefficients
    np.testing.assert_array_equal(decoded, _decoded_from_quantised(photo, 75, transform,
                                                                    subsampling))
    size, psnr = ROUND_TRIPS[transform, subsampling]
    assert len(data) == pytest.approx(size, rel=0.01)
    assert peak_signal_noise_ratio(photo, decoded, data_range=255) == pytest.approx(psnr,
                                                                                   abs=0.05)
    # near-lossless at quality 100 without chroma subsampling: only the rounding remains
    best = mj.decode(mj.encode(photo, 100, transform, "4:4:4"))
    assert np.abs(best.astype(int) - photo).max() <= 2  # measured: 2


def test_odd_small_images():
    rng = np.random.default_rng(1)
    for height, width in [(1, 1), (7, 33), (17, 8)]:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for transform in mj.TRANSFORMS:
            decoded = mj.decode(mj.encode(image, 50, transform))
            # the padding is cropped off and the pixels are the quantised image's
            np.testing.assert_array_equal(decoded,
                                          _decoded_from_quantised(image, 50, transform))


def _rate_and_psnr(image, data, decode):
    decoded = decode(data)
    psnr = metrics.psnr(to_tensor(image), to_tensor(decoded)).item()
    return metrics.bpp(len(data), *image.shape[:2]), psnr


def _pillow_point(image, quality):
    return _rate_and_psnr(image, classical.encode(image, "jpeg", quality), classical.decode)


def _mini_point(image, quality):
    return _rate_and_psnr(image, mj.encode(image, quality), mj.decode)


def test_same_file_size_and_quality_as_pillow(photo):
    """At matched quality, same PSNR within 0.3 dB and size within 8 % of Pillow's JPEG."""
    for quality in (20, 50, 85):
        (our_bpp, our_psnr), (pillow_bpp, pillow_psnr) = (
            _mini_point(photo, quality), _pillow_point(photo, quality))
        assert abs(our_psnr - pillow_psnr) < 0.3, quality
        assert abs(our_bpp / pillow_bpp - 1) < 0.08, quality


def test_bd_rate_against_pillow_on_kodak(kodak_image):
    """Notebook 05 measures mini-JPEG 1.5-3.9 % smaller than Pillow's JPEG 4:2:0 at equal PSNR
    on six Kodak images (kodim01: -2.13 % over qualities 10..90). Here, kodim01 at five
    qualities: -2.06 % measured now; the window of 0.5 percentage points either way allows
    another libjpeg-turbo build's hundredths of a dB, and fails if the codec gets better or
    worse by more than that (re-measure and update the notebook's text if it does)."""
    qualities = (15, 30, 50, 75, 90)
    pillow = np.array([_pillow_point(kodak_image, quality) for quality in qualities])
    ours = np.array([_mini_point(kodak_image, quality) for quality in qualities])
    margin = bench.bd_rate(pillow[:, 0], pillow[:, 1], ours[:, 0], ours[:, 1])
    assert margin == pytest.approx(-2.06, abs=0.5), margin


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_arguments(photo):
    for quality in (0, 101, 50.5):
        with pytest.raises(ValueError, match="quality"):
            mj.encode(photo, quality)
    with pytest.raises(ValueError, match="transform"):
        mj.encode(photo, 50, "wavelet")
    with pytest.raises(ValueError, match="subsampling"):
        mj.encode(photo, 50, subsampling="4:2:2")
    with pytest.raises(ValueError, match="levels"):
        mj.encode(photo, 50, "haar", levels=0)
    with pytest.raises(ValueError, match="uint8 RGB"):
        mj.encode(photo.astype(np.float32), 50)


def _with_crc(body: bytes) -> bytes:
    """``body`` with its CRC-32 appended, as the encoder ends a file."""
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_decoder_refuses_bad_bytes(photo):
    small = photo[:40, :56]
    data = mj.encode(small, 60)
    assert data[-4:] == zlib.crc32(data[:-4]).to_bytes(4, "little")
    with pytest.raises(DecodeError, match="MJPG"):
        mj.decode(b"\xff\xd8" + data[2:])
    with pytest.raises(DecodeError, match="checksum"):
        mj.decode(data + b"\x00")
    with pytest.raises(DecodeError, match="trailing"):  # extra bytes under a valid checksum
        mj.decode(_with_crc(data[:-4] + b"\x00"))
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            mj.decode(data[:cut])
    rng = np.random.default_rng(0)
    for _ in range(200):  # the checksum catches every flipped bit (JPEG itself catches few)
        damaged = bytearray(data)
        position = int(rng.integers(len(damaged)))
        damaged[position] ^= 1 << int(rng.integers(8))
        with pytest.raises(DecodeError):
            mj.decode(bytes(damaged))


def test_other_versions_are_refused_with_what_to_do(photo):
    data = mj.encode(photo[:16, :16], 50)
    assert data[4] == mj.VERSION == 2
    with pytest.raises(DecodeError, match="no checksum.*re-encode"):
        mj.decode(_with_crc(data[:4] + b"\x01" + data[5:-4]))
    with pytest.raises(DecodeError, match="newer.*update course_lib"):
        mj.decode(_with_crc(data[:4] + b"\x03" + data[5:-4]))


def test_huge_headers_are_refused_before_decoding(photo):
    data = mj.encode(photo[:16, :16], 50)
    huge = _with_crc(data[:9] + (65535).to_bytes(2, "little") * 2 + data[13:-4])
    with pytest.raises(DecodeError, match="limit"):
        mj.decode(huge)
    with pytest.raises(DecodeError, match="cannot hold"):  # under the limit: too few bytes
        mj.decode(huge, max_pixels=65535**2)


def test_file_is_its_named_parts(photo):
    groups = [mj.encode_group(blocks) for blocks in mj.quantized_blocks(photo, 40)]
    expected = 13 + sum(len(part) for parts in groups for part in parts.values()) + 4  # CRC
    assert len(mj.encode(photo, 40)) == expected


def _caption(image, data, decoded):
    """Size and PSNR as the widget words them, measured here with skimage's PSNR."""
    psnr = peak_signal_noise_ratio(image, decoded, data_range=255)
    bpp = 8 * len(data) / (image.shape[0] * image.shape[1])
    return f"{len(data) / 1024:.1f} KiB, {bpp:.3f} bpp, PSNR {psnr:.2f} dB"


def _pillow_caption(image, quality):
    buffer = io.BytesIO()  # Pillow's JPEG 4:2:0 with optimised Huffman tables, written here
    Image.fromarray(image).save(buffer, "JPEG", quality=quality, subsampling=2, optimize=True)
    decoded = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return _caption(image, buffer.getvalue(), decoded)


def test_quality_comparison_widget_shows_the_sizes_and_psnrs_of_the_chosen_quality(
        photo, shown_titles):
    from course_lib.widgets.mini_jpeg import quality_comparison

    panel = quality_comparison(photo, quality=30)
    quality, transform = panel.children[0].children
    for value, kind, label in [(30, "dct", "mini-JPEG (DCT)"), (60, "dct", "mini-JPEG (DCT)"),
                               (60, "haar", "mini-JPEG (Haar DWT)")]:
        quality.value, transform.value = value, kind
        _, ours, pillow = shown_titles[-1]
        data = mj.encode(photo, value, kind)
        assert ours == f"{label} q={value}\n{_caption(photo, data, mj.decode(data))}"
        assert pillow == f"Pillow JPEG 4:2:0 q={value}\n{_pillow_caption(photo, value)}"
    assert shown_titles[-2] != shown_titles[-1]  # the transform changed the numbers
