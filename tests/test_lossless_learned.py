"""The learned lossless coder: exact round trips, the same bytes whatever the threads, hostile
files, the training loss against the real coded size, and the course trainer on it."""

import hashlib
import io
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from test_lossless import kinds as lossless_kinds  # tests/ is on the path
from test_lossless import smooth

from course_lib import datasets
from course_lib import train as course_train
from course_lib.codecs import lossless
from course_lib.codecs import lossless_learned as ll
from course_lib.codecs.lossless import LosslessFileError
from course_lib.images import ImageError

SIZES = [(1, 1), (3, 5), (17, 31), (2, 9), (9, 2)]


def kinds(shape):
    """The predictive coder's test images (tests/test_lossless.py), without the black one."""
    images = lossless_kinds(shape)
    del images["black"]
    return images


def round_trip(image, **kwargs):
    data = ll.compress_learned(image, **kwargs)
    decoded = ll.decompress_learned(data)
    assert decoded.dtype == np.uint8 and decoded.shape == image.shape
    assert np.array_equal(decoded, image), kwargs
    return data


@pytest.mark.parametrize("channels", [None, 3])
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_is_exact_on_odd_sizes(size, channels):
    shape = size if channels is None else (*size, channels)
    for image in kinds(shape).values():
        for levels in (None, 1, 3):
            for table_mode in (0, 1):
                data = round_trip(image, levels=levels, table_mode=table_mode)
                assert data[8] == table_mode


@pytest.mark.parametrize("channels", [None, 3])
def test_adapted_files_round_trip_on_odd_sizes(channels):
    for size in [(3, 5), (17, 31), (2, 9)]:
        shape = size if channels is None else (*size, channels)
        for image in kinds(shape).values():
            for levels in (1, 3):
                data = round_trip(image, levels=levels, adapt=True, adapt_steps=3)
                assert data[4] == 2, "an adapted file is version 2"


def test_without_adaptation_the_file_is_version_1():
    image = smooth((40, 52, 3), seed=3)
    data = round_trip(image, adapt=False)
    assert data[4] == 1 and ll.describe(data)["adaptation_bytes"] == 0
    # small images are not fitted by default: the section would cost more than it saves
    assert ll.compress_learned(image) == data


def test_extreme_adaptations_still_code_exactly(monkeypatch):
    """Whatever changes a file declares (here the largest int16 steps of either sign, far
    beyond what a fit gives), decoding gives the pixels back or refuses, never wrong ones."""
    image = smooth((24, 30, 3), seed=5)
    size = ll.adaptation_size(ll.shipped_model())
    for fill in (np.iinfo(np.int16).max, -np.iinfo(np.int16).max):
        monkeypatch.setattr(ll, "fit_adaptation",
                            lambda *args, fill=fill: (np.full(size, fill, np.int64), 0.0))
        round_trip(image, adapt=True)


def test_the_encoder_keeps_the_smaller_table_mode():
    image = smooth((40, 52, 3), seed=3)
    sizes = [len(ll.compress_learned(image, table_mode=mode)) for mode in (0, 1)]
    assert len(round_trip(image)) == min(sizes)


def test_polyphase_split_and_merge_are_inverse():
    for shape in [(1, 1), (4, 6), (5, 7, 3), (8, 1)]:
        image = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
        phases = ll.polyphase_split(image)
        assert [phase.shape[:2] for phase in phases] == [
            ll.phase_shape(*shape[:2], phase) for phase in ll.PHASES]
        assert np.array_equal(ll.polyphase_merge(phases, *shape[:2]), image)


# Measured on this crop (shipped model 1): with the encoder's fit 0.968 x LLCC's size and
# 0.722 x PNG's; without it 1.015 x LLCC's.
LLCC_BOUND = 0.99
def test_a_kodak_crop_codes_well_below_png_and_below_llcc_and_repeats_exactly():
    from PIL import Image

    image = datasets.load_kodak(3)[128:320, 256:544]
    data = round_trip(image)
    assert ll.compress_learned(image) == data  # deterministic
    llcc = lossless.compress_lossless(image)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    assert len(data) < 0.8 * len(buffer.getvalue())
    assert len(data) < LLCC_BOUND * len(llcc)


DETERMINISM = """
import hashlib, numpy as np, torch
torch.set_num_threads(2)
from course_lib import datasets
from course_lib.codecs import lossless_learned as ll
image = datasets.load_kodak(5)[:96, :160]
for adapt in (False, True):
    data = ll.compress_learned(image, adapt=adapt, adapt_steps=40)
    assert np.array_equal(ll.decompress_learned(data), image)
    print(hashlib.sha256(data).hexdigest())
"""


def test_the_bytes_do_not_depend_on_the_number_of_threads():
    """Another process with 2 threads writes the same files as this one with 1, with and
    without the encoder's fit (which runs on one thread whatever the setting)."""
    torch.set_num_threads(1)
    image = datasets.load_kodak(5)[:96, :160]
    here = [hashlib.sha256(ll.compress_learned(image, adapt=adapt, adapt_steps=40)).hexdigest()
            for adapt in (False, True)]
    there = subprocess.run([sys.executable, "-c", DETERMINISM], capture_output=True, text=True,
                           check=True).stdout.split()
    assert here == there and here[0] != here[1]


def test_tiled_network_matches_the_whole_image_network():
    model = ll.shipped_model()
    phases = [ll.to_network(torch.rand(1, 3, 150, 140, dtype=torch.float64) * 255)
              for _ in range(3)]
    for k in range(3):
        whole = model.pass_outputs(phases, k)
        tiled = model.pass_outputs(phases, k, tiled=True)
        assert torch.allclose(whole, tiled, atol=1e-9)


def test_training_bits_match_the_coded_size():
    """The loss the network is trained on is what the coder pays (on the passes it codes),
    up to the tables' rounding of scales and offsets and the files' headers."""
    image = datasets.load_kodak(7)[:128, :192]
    model = ll.shipped_model()
    with torch.no_grad():
        bits = ll.estimated_bits(image, model)
    full = len(ll.compress_learned(image, levels=1, table_mode=0))
    coarse = len(lossless.compress_lossless(image[::2, ::2]))
    coded = 8 * (full - coarse)
    assert abs(coded / bits - 1) < 0.02, (coded, bits)


def test_the_fit_saves_what_it_estimates_on_a_kodak_crop():
    """Fitting the last layers to the image (the default on this size) gives a smaller real
    file, by about what the fit's estimate says (on the same mode-0 tables); the fit is the
    optimiser's work, not a constant: a fit of 0 steps changes nothing."""
    image = datasets.load_kodak(1)[:192, :256]
    plain = round_trip(image, table_mode=0, adapt=False)
    adapted = round_trip(image, table_mode=0)
    described = ll.describe(adapted)
    assert adapted[4] == 2 and 0 < described["adaptation_bytes"] < 2500
    pyramid = [image, image[::2, ::2]]
    deltas, saved = ll.fit_adaptation(ll.shipped_model(), pyramid, 1, False)
    real = 8 * (len(plain) - len(adapted) + described["adaptation_bytes"] + 4)
    assert saved > 0.05 * 8 * len(plain), "the fit saves at least 5 % on this crop"
    assert abs(real / saved - 1) < 0.1, (real, saved)
    assert np.count_nonzero(ll.fit_adaptation(ll.shipped_model(), pyramid, 1, False,
                                              steps=0)[0]) == 0
    # and the adapted model is the shipped one moved by exactly those steps
    moved = ll.adapted_model(ll.shipped_model(), deltas)
    change = moved.passes[0].body[-1].bias - ll.shipped_model().passes[0].body[-1].bias
    weights = ll.shipped_model().passes[0].body[-1].weight.numel()
    assert torch.equal(change, torch.from_numpy(deltas[weights : weights + 9]) * ll.ADAPT_STEP)


def test_a_few_training_steps_run_through_the_course_trainer(tmp_path):
    torch.manual_seed(0)
    model = ll.PolyphaseModel(channels=8)
    batches = [torch.rand(2, 3, 32, 32) for _ in range(3)]
    result = course_train.train(model, batches, lambda m, b: ll.training_loss(m, b),
                                torch.optim.Adam(model.parameters(), 1e-3), steps=3,
                                device="cpu", progress=False,
                                checkpoint_path=tmp_path / "ckpt.pt")
    steps, losses = result.curve("bpsp")
    # uniform noise: no model beats 8 bits a subpixel, and the tables' floor caps it at 16
    assert result.step == 3 and np.all((8 < losses) & (losses <= 16))


# --- hostile files --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[(0, False), (1, False), (0, True)],
                ids=["tables-0", "tables-1", "adapted"])
def sample(request):
    image = smooth((21, 34, 3), seed=4)
    mode, adapt = request.param
    return image, ll.compress_learned(image, levels=2, table_mode=mode, adapt=adapt,
                                      adapt_steps=5)


def test_a_damaged_adaptation_section_is_refused():
    image = smooth((21, 34, 3), seed=4)
    data = ll.compress_learned(image, levels=2, adapt=True, adapt_steps=5)
    described = ll.describe(data)
    length = described["adaptation_bytes"]
    # the section lies just before the segments, which end at the CRC
    start = len(data) - 4 - sum(segment["bytes"] for segment in described["segments"]) - length
    section = data[start : start + length]
    assert ll._read_adaptation(section, ll.adaptation_size(ll.shipped_model())).size
    header_end = ll._HEADER.size
    assert int.from_bytes(data[header_end : header_end + 4], "big") == length
    for bad in (b"\x78\x9c" + bytes(length - 2),  # not deflate data
                zlib.compress(bytes(100), 9)[:length].ljust(length, b"\0"),  # wrong size
                ):
        refused(with_crc(data[:start] + bad[:length] + data[start + length : -4]),
                "adaptation section")
    assert len(section) == length
    # a version-2 file must carry a section
    no_section = bytearray(data[:-4])
    no_section[header_end : header_end + 4] = bytes(4)
    refused(with_crc(bytes(no_section)))


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def refused(data, match=None):
    with pytest.raises(LosslessFileError, match=match):
        ll.decompress_learned(data)


def test_truncated_and_extended_files_are_refused(sample):
    _, data = sample
    for length in range(0, len(data), 5):
        refused(data[:length])
    refused(data + b"\0")
    refused(with_crc(data[:-5]))  # a shorter body under a valid checksum


def test_damage_behind_a_recomputed_checksum_is_refused(sample):
    _, data = sample
    rng = np.random.default_rng(0)
    for _ in range(60):
        damaged = bytearray(data[:-4])
        position = int(rng.integers(ll._HEADER.size, len(damaged)))
        damaged[position] ^= 1 << int(rng.integers(8))
        refused(with_crc(bytes(damaged)))


@pytest.mark.parametrize("offset, value, match", [
    (0, 0, "not a learned lossless file"), (4, 3, "version 3"), (4, 0, "version 0"),
    (5, 9, "model 9"),
    (6, 2, "2 planes"), (7, 9, "9 levels"), (8, 2, "table mode 2")])
def test_header_fields_are_refused_with_what_to_do(sample, offset, value, match):
    _, data = sample
    damaged = bytearray(data[:-4])
    damaged[offset] = value
    refused(with_crc(bytes(damaged)), match)


def test_a_file_claiming_a_huge_image_is_refused_before_any_work(sample):
    _, data = sample
    for height, width, match in ((65535, 65535, "pixels"), (9000, 9000, "coarsest"),
                                 (21, 35, "fast-path data failed")):
        damaged = bytearray(data[:-4])
        damaged[9:17] = height.to_bytes(4, "big") + width.to_bytes(4, "big")
        refused(with_crc(bytes(damaged)), match)


def test_files_of_the_first_model_still_decode():
    # Model 1 was trained on from model 0: a file names its model, and both stay shipped.
    image = datasets.load_kodak(9)[:40, :56]
    first = round_trip(image, model_id=0)
    default = round_trip(image)
    assert first[5] == 0 and default[5] == ll.DEFAULT_MODEL == 1
    assert first != default
    assert ll.shipped_model(0) is not ll.shipped_model(1)


def test_llcc_files_still_decode_and_are_told_apart():
    image = smooth((9, 11, 3))
    llcc = lossless.compress_lossless(image)
    assert np.array_equal(lossless.decompress_lossless(llcc), image)
    refused(llcc, "LLCC")
    with pytest.raises(LosslessFileError, match="lossless_learned"):
        lossless.decompress_lossless(ll.compress_learned(image))


def test_bad_inputs_are_refused_with_advice():
    with pytest.raises(ImageError, match="uint8"):
        ll.compress_learned(np.zeros((4, 4), np.float32))
    with pytest.raises(ImageError, match="empty"):
        ll.compress_learned(np.zeros((0, 4), np.uint8))
    with pytest.raises(ValueError, match="levels"):
        ll.compress_learned(np.zeros((4, 4), np.uint8), levels=5)


def test_the_command_line_round_trip(tmp_path):
    from PIL import Image

    from course_lib import __main__ as cli

    for name, image in (("grey", smooth((13, 19))), ("rgb", smooth((14, 17, 3)))):
        source = tmp_path / f"{name}.png"
        Image.fromarray(image).save(source)
        coded, decoded = tmp_path / f"{name}.llcl", tmp_path / f"{name}.out.png"
        assert cli.main(["encode", str(source), str(coded), "--lossless", "--learned"]) == 0
        assert coded.read_bytes()[:4] == ll.MAGIC
        assert cli.main(["decode", str(coded), str(decoded)]) == 0
        assert np.array_equal(np.array(Image.open(decoded)), image)
    with pytest.raises(SystemExit):  # --learned belongs to --lossless
        cli.main(["encode", str(source), str(tmp_path / "x.licc"), "--learned", "--quality",
                  "1"])
    damaged = tmp_path / "damaged.llcl"
    damaged.write_bytes(coded.read_bytes()[:-3])
    assert cli.main(["decode", str(damaged), str(tmp_path / "x.png")]) == 2
