"""Decoders of untrusted bytes. A short, seeded run of ``benchmarks/fuzz_decoders.py`` (in a
process of its own, so that its peak memory is its own) must see only each format's documented
error, no case over 2 s and under 500 MB of memory growth; then a test for each way a
malformed file could otherwise get through: a crash, a huge allocation, a silent wrong answer."""

import importlib.util
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from course_lib import __main__ as cli
from course_lib import images
from course_lib.codecs import learned
from course_lib.entropy import DecodeError, HuffmanCode, decode_with_indexes, rans

FUZZ_SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz_decoders.py"
_spec = importlib.util.spec_from_file_location("fuzz_decoders", FUZZ_SCRIPT)
fuzz = sys.modules["fuzz_decoders"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def fuzz_results():
    run = subprocess.run([sys.executable, str(FUZZ_SCRIPT), "--mutations", "300", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return {result["key"]: result for result in json.loads(run.stdout)}


@pytest.mark.parametrize("key", list(fuzz.FORMATS))
def test_only_the_documented_error_escapes_quickly_and_in_bounded_memory(fuzz_results, key):
    result = fuzz_results[key]
    outcomes = result["outcomes"]
    assert result["cases"] > 900
    assert [outcome for outcome in outcomes if "|unexpected" in outcome] == []
    assert result["max_seconds"] < 2.0, result["slowest"]
    assert result["rss_growth_mb"] < 500
    assert result["bomb_surprises"] == []
    refused = {outcome.split("|")[0] for outcome in outcomes if outcome.endswith("|refused")}
    assert {"truncation", "mutation"} <= refused
    if result["checked"]:  # no damaged file gets past the checksum
        assert [outcome for outcome in outcomes
                if outcome.split("|")[1] == "kept" and outcome.endswith("|decoded")] == []


@pytest.mark.parametrize("key", ["learned", "lossless-learned", "mini-jpeg"])
def test_recomputed_checksums_let_damage_reach_the_parser(fuzz_results, key):
    outcomes = fuzz_results[key]["outcomes"]
    assert outcomes["mutation|fixed|refused"] > 250 and outcomes["field|fixed|refused"] > 50


# -- the learned codec ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def learned_format():
    return fuzz.learned_format()


def _refused_quickly(decode, data, error, match, **kwargs):
    started = time.perf_counter()
    with pytest.raises(error, match=match):
        decode(data, **kwargs)
    assert time.perf_counter() - started < 1.0


def test_a_malformed_body_under_a_valid_checksum_is_refused(learned_format):
    data = learned_format.files[0]
    for count, match in ((200, "200 streams.*no room"), (0, "0 streams"), (1, "add up")):
        patched = fuzz.set_field(data, 22, ">B", count)  # 200: more than the fields present
        _refused_quickly(learned.decompress_image, learned_format.fix(patched),
                         learned.CodecFileError, match)


def test_learned_bombs_are_refused_before_any_work(learned_format):
    bombs = {name: data for name, data, *_ in learned_format.bombs}
    tiny = bombs["43 bytes claiming 65535x65535"]
    assert len(tiny) == 43
    _refused_quickly(learned.decompress_image, tiny, learned.CodecFileError, "limit")
    # with the limit lifted, its two 4-byte streams cannot hold the latents it implies
    _refused_quickly(learned.decompress_image, tiny, learned.CodecFileError, "cannot hold",
                     max_pixels=2**32)
    _refused_quickly(learned.decompress_image, bombs["claims 9000x9000"],
                     learned.CodecFileError, "cannot hold")


# -- latent files ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def latent_format():
    return fuzz.latent_format()


def test_latent_files_refuse_empty_and_oversized_headers(latent_format):
    decode, data = latent_format.decoders[6], latent_format.files[6]  # zlib, 8 bits
    for offset in (2, 4, 6, 8, 10):  # channels, rows, cols, height, width
        _refused_quickly(decode, fuzz.set_field(data, offset, "<H", 0), DecodeError,
                         "no size may be 0")
    bombs = {name: bomb for name, bomb, *_ in latent_format.bombs}
    raw = bombs["raw 65535x65535"]  # tried to allocate 256 GiB
    _refused_quickly(decode, raw, DecodeError, "limit")
    _refused_quickly(decode, raw, DecodeError, "raw symbols", max_pixels=2**32)
    _refused_quickly(decode, bombs["zlib 2048x2048 in 11 bytes"], DecodeError, "cannot hold")
    _refused_quickly(decode, bombs["zlib 16384x32768 in 65 KB"], DecodeError, "limit")


def test_latent_pngs_never_leak_pillow_errors(latent_format):
    decode, data = latent_format.decoders[5], latent_format.files[5]  # PNG, 8 bits
    start = 12 + 8 * 4
    bad_crc = bytearray(data)
    bad_crc[start + 29] ^= 1  # Pillow raises SyntaxError: broken PNG file
    _refused_quickly(decode, bytes(bad_crc), DecodeError, "PNG cannot be read")
    bombs = {name: bomb for name, bomb, *_ in latent_format.bombs}
    _refused_quickly(decode, bombs["PNG claiming 30000x30000"], DecodeError, "PNG")
    _refused_quickly(decode, bombs["PNG claiming 9000x9000"], DecodeError, "9000x9000")
    _refused_quickly(decode, data[:-1], DecodeError, "cut short")


def test_a_latent_grid_must_match_the_image_it_claims(latent_format):
    decode, data = latent_format.decoders[6], latent_format.files[6]
    height, width = (int.from_bytes(data[offset : offset + 2], "little") for offset in (8, 10))
    assert decode(data).shape[-2:] == (height, width)
    for offset, size in ((8, height + 4), (10, width + 4), (8, height - 4)):
        # a grid too small or too large for the image the header claims is no silent crop
        _refused_quickly(decode, fuzz.set_field(data, offset, "<H", size), DecodeError,
                         "latent channels of .* this model decodes")


def test_latent_file_errors_say_what_is_wrong_in_the_formats_words(latent_format):
    messages = set()
    for _, _, index, damaged in fuzz.cases(latent_format, mutations=60, seed=1):
        try:
            latent_format.decoders[index](damaged)
        except DecodeError as error:
            messages.add(str(error))
    assert len(messages) > 20
    assert [message for message in messages if "latent" not in message] == []
    raw_numpy = ("reshape", "buffer size", "unpack requires", "broadcast", "index")
    assert [message for message in messages if any(text in message for text in raw_numpy)] == []


# -- entropy coders' streams -----------------------------------------------------------------
def test_entropy_streams_refuse_counts_their_bytes_cannot_hold():
    readable = fuzz.readable_stream_format()
    bomb = readable.bombs[0][1]
    _refused_quickly(readable.decoders[0], bomb, DecodeError, "4294967295 bypass symbols")
    table = fuzz.gaussian_cdf_table(fuzz.log_scale_table(1, 64, 8))  # >= 1 bit a value
    indexes = np.zeros(10**6, np.int64)
    _refused_quickly(lambda data: decode_with_indexes(data, indexes, table), b"\1" * 8,
                     DecodeError, "cannot hold")
    code = HuffmanCode.from_frequencies([1, 2, 3])
    _refused_quickly(lambda data: code.decode(data, 10**9), bytes(10), DecodeError,
                     "cannot hold 1000000000")
    values = np.zeros(4, np.int64)
    stream = rans.encode_with_indexes(values, np.zeros(4, np.int64), table)
    _refused_quickly(lambda data: rans.decode_with_indexes(data, np.zeros(4, np.int64), table),
                     fuzz.set_field(stream, 0, "<I", 64), DecodeError, "cannot hold")


# -- images in -------------------------------------------------------------------------------
def _png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    return fuzz.png_claiming(buffer.getvalue(), height, width)


def test_image_bombs_are_refused_with_the_limit_and_how_to_raise_it(monkeypatch):
    assert images.MAX_PIXELS == Image.MAX_IMAGE_PIXELS == 89_478_485
    with pytest.raises(images.ImageError, match="too large.*max_pixels=.*COURSE_MAX_PIXELS"):
        images.load_image(_png(20000, 20000))  # Pillow's DecompressionBombError, explained
    over_ours = _png(10000, 10000)  # Pillow only warns; the course's limit refuses
    with pytest.raises(images.ImageError, match="100,000,000 pixels.*89,478,485"):
        images.load_image(over_ours)
    with pytest.raises(images.ImageError, match="damaged"):  # allowed, but the data is missing
        images.load_image(over_ours, max_pixels=10**8)
    with pytest.raises(images.ImageError, match="over the limit of 99"):
        images.load_image(_png(10, 10), max_pixels=99)
    monkeypatch.setenv("COURSE_MAX_PIXELS", "99")
    with pytest.raises(images.ImageError, match="over the limit of 99"):
        images.load_image(_png(10, 10))
    monkeypatch.setenv("COURSE_MAX_PIXELS", "a lot")
    with pytest.raises(ValueError, match="COURSE_MAX_PIXELS"):
        images.load_image(_png(10, 10))


def test_the_command_line_refuses_an_image_bomb_in_one_line(tmp_path, capsys):
    (tmp_path / "bomb.png").write_bytes(_png(20000, 20000))
    assert cli.main(["encode", str(tmp_path / "bomb.png"), str(tmp_path / "bomb.licc"),
                     "--quality", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "too large" in err and "COURSE_MAX_PIXELS" in err
    assert os.listdir(tmp_path) == ["bomb.png"]
