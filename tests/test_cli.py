"""The command line with odd inputs and outputs: one `error:` line and exit code 2 for every
problem a user can cause, `warning:` lines for converted inputs, and no `.part` files left."""

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from course_lib import __main__ as cli
from course_lib.codecs import learned
from course_lib.images import load_image, save_image


@pytest.fixture
def photo_png(tmp_path):
    rng = np.random.default_rng(0)
    image = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    return save_image(image, tmp_path / "photo.png")


@pytest.fixture
def licc(photo_png, tmp_path):
    """A file of the shipped codec, made by the command line."""
    path = tmp_path / "photo.licc"
    assert cli.main(["encode", str(photo_png), str(path), "--quality", "0"]) == 0
    return path


def _one_error_line(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def _leftovers(folder: Path):
    return sorted(path.name for path in folder.rglob("*.part"))


def test_encode_refuses_to_overwrite_its_input(photo_png, tmp_path, capsys, monkeypatch):
    before = photo_png.read_bytes()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["encode", "photo.png", f"../{tmp_path.name}/photo.png",
                     "--quality", "1"]) == 2
    _one_error_line(capsys, "is the input file")
    assert photo_png.read_bytes() == before


def test_decode_refuses_to_overwrite_its_input(licc, capsys):
    before = licc.read_bytes()
    assert cli.main(["decode", str(licc), str(licc)]) == 2
    _one_error_line(capsys, "is the input file")
    assert licc.read_bytes() == before


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_outputs_that_cannot_be_written_are_one_line_errors(command, photo_png, licc, tmp_path,
                                                            capsys):
    source = photo_png if command == "encode" else licc
    extension = ".licc" if command == "encode" else ".png"
    options = ["--quality", "0"] if command == "encode" else []
    (tmp_path / "folder").mkdir()
    (tmp_path / "a-file").write_bytes(b"")
    for output, fragment in ((tmp_path / "missing" / f"out{extension}", "no folder"),
                             (tmp_path / "a-file" / f"out{extension}", "no folder"),
                             (tmp_path / "folder", "is a folder")):
        assert cli.main([command, str(source), str(output), *options]) == 2
        _one_error_line(capsys, str(output), fragment)
    assert _leftovers(tmp_path) == []


def test_an_unwritable_folder_is_a_one_line_error(photo_png, tmp_path, capsys):
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
    else:  # root writes anywhere chmod allows; sysfs refuses new files even to root
        locked = Path("/sys")
        if not locked.is_dir():
            pytest.skip("running as root without /sys: no folder refuses writes")
    try:
        assert cli.main(["encode", str(photo_png), str(locked / "out.licc"),
                         "--quality", "0"]) == 2
        _one_error_line(capsys, "cannot write", "ermission")
        assert _leftovers(tmp_path) == [] and not (locked / "out.licc.part").exists()
    finally:
        if locked != Path("/sys"):
            locked.chmod(0o700)


@pytest.mark.parametrize("step, error", [
    ("write_bytes", PermissionError(13, "Permission denied")),  # as in a read-only folder
    ("replace", OSError(28, "No space left on device")),  # the .part file is written first
])
def test_a_failed_write_is_a_one_line_error_and_leaves_no_part_file(
        step, error, photo_png, tmp_path, capsys, monkeypatch):
    write = Path.write_bytes

    def fail(self, *args):
        if step == "replace":
            assert self.name.endswith(".part") and self.is_file()
        else:
            write(self, b"partial")
        raise error

    monkeypatch.setattr(Path, step, fail)
    output = tmp_path / "out.licc"
    assert cli.main(["encode", str(photo_png), str(output), "--quality", "0"]) == 2
    _one_error_line(capsys, "cannot write", error.strerror)
    assert not output.exists() and _leftovers(tmp_path) == []


def test_decode_refuses_an_unknown_image_extension(licc, tmp_path, capsys):
    assert cli.main(["decode", str(licc), str(tmp_path / "out.xyz")]) == 2
    _one_error_line(capsys, ".xyz", ".png")
    assert list(tmp_path.glob("out*")) == []


def test_converted_inputs_print_warnings_and_still_encode(tmp_path, capsys):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba).save(tmp_path / "half.png")
    assert cli.main(["encode", str(tmp_path / "half.png"), str(tmp_path / "half.licc"),
                     "--quality", "0"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "composited onto white" in err
    decoded = learned.decompress_image((tmp_path / "half.licc").read_bytes())
    assert abs(decoded.mean() - 128) < 10  # half-transparent black on white: mid grey


def test_a_malformed_body_under_a_valid_checksum_is_a_one_line_error(licc, tmp_path, capsys):
    body = bytearray(licc.read_bytes()[:-4])
    body[22] = 200  # a stream count larger than the length fields present
    (tmp_path / "count.licc").write_bytes(bytes(body) + zlib.crc32(body).to_bytes(4, "big"))
    assert cli.main(["decode", str(tmp_path / "count.licc"), str(tmp_path / "x.png")]) == 2
    _one_error_line(capsys, "200 streams")
    assert not (tmp_path / "x.png").exists() and _leftovers(tmp_path) == []


def test_decode_writes_the_decoded_pixels(licc, tmp_path):
    assert cli.main(["decode", str(licc), str(tmp_path / "out.png")]) == 0
    np.testing.assert_array_equal(load_image(tmp_path / "out.png"),
                                  learned.decompress_image(licc.read_bytes()))


@pytest.mark.parametrize("grey", [False, True])
def test_lossless_files_give_the_exact_pixels_back(tmp_path, capsys, grey):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (23, 37) if grey else (23, 37, 3)).astype(np.uint8)
    source = save_image(image, tmp_path / "in.png")
    assert cli.main(["encode", str(source), str(tmp_path / "x.llcc"), "--lossless"]) == 0
    assert cli.main(["decode", str(tmp_path / "x.llcc"), str(tmp_path / "out.png")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), image)
    damaged = bytearray((tmp_path / "x.llcc").read_bytes())
    damaged[-10] ^= 1
    (tmp_path / "bad.llcc").write_bytes(bytes(damaged))
    capsys.readouterr()
    assert cli.main(["decode", str(tmp_path / "bad.llcc"), str(tmp_path / "o2.png")]) == 2
    _one_error_line(capsys, "bad.llcc")
    assert not (tmp_path / "o2.png").exists() and _leftovers(tmp_path) == []


def test_encode_needs_either_a_quality_or_lossless(photo_png, tmp_path, capsys):
    for options in ([], ["--quality", "1", "--lossless"], ["--lossless", "--effort", "1"]):
        with pytest.raises(SystemExit) as stop:
            cli.main(["encode", str(photo_png), str(tmp_path / "x"), *options])
        assert stop.value.code == 2
        assert "--lossless" in capsys.readouterr().err
