"""Shipped weights: the one checksum list, and where the files come from (mirror, checkout,
download on first use, from a local HTTP server here)."""

import hashlib
import json
import socket
import threading
import time

import pytest

from course_lib import datasets, repository, weights
from course_lib.weights import WeightsError

# what the library and notebooks read
WEIGHT_FILES = ("*.pt", "logs/*.csv", "training/log.csv", "training/*/log.csv")


def test_manifest_lists_every_shipped_file_with_its_checksum():
    on_disk = {path.relative_to(weights.CHECKOUT).as_posix()
               for group in weights.CHECKOUT.iterdir() if group.is_dir()
               for pattern in WEIGHT_FILES for path in group.glob(pattern)}
    sums = weights.checksums()
    assert set(sums) == on_disk, "run `python -m course_lib.weights record weights/…`"
    for name, digest in sums.items():
        assert datasets.sha256_of(weights.CHECKOUT / name) == digest, name
    assert weights.path("codec/mean-scale-vr.pt") == weights.CHECKOUT / "codec/mean-scale-vr.pt"


def test_record_writes_the_manifest_the_loader_reads(tmp_path, monkeypatch):
    committed = weights.MANIFEST.read_text()
    manifest = tmp_path / "weights.txt"
    manifest.write_text("")
    monkeypatch.setattr(weights, "MANIFEST", manifest)
    shipped = [name.split()[1] for name in committed.splitlines()]
    assert weights.record([weights.CHECKOUT / name for name in shipped[::-1]]) == shipped[::-1]
    assert manifest.read_text() == committed  # sha256sum lines, sorted by file
    new = tmp_path / "elsewhere.pt"
    new.write_bytes(b"not shipped")
    assert weights.record([new]) == [] and "elsewhere" not in manifest.read_text()
    monkeypatch.setattr(weights, "CHECKOUT", tmp_path)
    monkeypatch.delenv(weights.MIRROR_VARIABLE, raising=False)
    (tmp_path / "codec").mkdir()
    (tmp_path / "codec" / "new.pt").write_bytes(b"retrained")
    assert weights.record([tmp_path / "codec" / "new.pt"]) == ["codec/new.pt"]
    assert f"{hashlib.sha256(b'retrained').hexdigest()}  codec/new.pt\n" in manifest.read_text()
    assert weights.path("codec/new.pt").read_bytes() == b"retrained"


def test_mirror_folder_is_used_and_checked(ship_weights, monkeypatch):
    shipped = ship_weights("codec/model.pt", b"weights")
    assert weights.path("codec/model.pt") == shipped
    assert weights.folder("codec") == shipped.parent
    shipped.write_bytes(b"tampered")
    with pytest.raises(WeightsError, match=f"damaged.*{weights.MIRROR_VARIABLE}"):
        weights.path("codec/model.pt")
    shipped.unlink()
    with pytest.raises(WeightsError, match=f"model.pt is missing.*{weights.MIRROR_VARIABLE}"):
        weights.path("codec/model.pt")
    with pytest.raises(WeightsError, match="not a shipped file"):
        weights.path("codec/other.pt")
    with pytest.raises(WeightsError, match=r"no shipped weights group 'vae'.*\['codec'\]"):
        weights.folder("vae")


def test_checkout_files_are_checked_with_a_git_remedy(tmp_path, monkeypatch):
    monkeypatch.delenv(weights.MIRROR_VARIABLE, raising=False)
    monkeypatch.setattr(weights, "CHECKOUT", tmp_path)
    monkeypatch.setattr(weights, "MANIFEST", tmp_path / "weights.txt")
    (tmp_path / "weights.txt").write_text(f"{hashlib.sha256(b'good').hexdigest()}  codec/m.pt\n")
    with pytest.raises(WeightsError, match="missing: restore it with `git checkout -- weights/"):
        weights.path("codec/m.pt")
    (tmp_path / "codec").mkdir()
    (tmp_path / "codec" / "m.pt").write_bytes(b"bad")
    with pytest.raises(WeightsError, match="damaged.*git checkout.*course_lib.weights record"):
        weights.path("codec/m.pt")


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """course_lib as installed outside a checkout, for the repository course-test/course at
    ref v1, whose files a local HTTP server would serve: returns ``publish(name, data)``."""
    monkeypatch.delenv(weights.MIRROR_VARIABLE, raising=False)
    monkeypatch.setattr(weights, "CHECKOUT", tmp_path / "no-checkout")
    monkeypatch.setattr(weights, "MANIFEST", tmp_path / "weights.txt")
    monkeypatch.setenv(datasets.DATA_DIR_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setattr(repository, "SETTING", tmp_path / "repository.json")
    (tmp_path / "repository.json").write_text('{"name": "course-test/course", "ref": "v1"}')
    (tmp_path / "weights.txt").write_text("")

    def listed(name: str, data: bytes):
        with (tmp_path / "weights.txt").open("a") as out:
            out.write(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
        return tmp_path / "cache" / "weights" / name

    return listed


def test_download_on_first_use_is_verified_and_kept(installed, server, monkeypatch):
    monkeypatch.setattr(repository, "RAW_FILES", f"http://127.0.0.1:{server.server_address[1]}")
    cached = installed("notebook06/logs/a.csv", b"step,loss\n1,0.5\n")
    server.files["/course-test/course/v1/weights/notebook06/logs/a.csv"] = b"step,loss\n1,0.5\n"
    assert weights.path("notebook06/logs/a.csv") == cached
    assert cached.read_bytes() == b"step,loss\n1,0.5\n"
    server.files.clear()  # from now on only the kept copy can serve
    assert weights.folder("notebook06") == cached.parent.parent
    cached.write_bytes(b"damaged")
    with pytest.raises(WeightsError, match="404"):  # a damaged copy is fetched again
        weights.path("notebook06/logs/a.csv")
    server.files["/course-test/course/v1/weights/notebook06/logs/a.csv"] = b"other bytes"
    with pytest.raises(WeightsError, match="does not match"):
        weights.path("notebook06/logs/a.csv")
    assert not list(cached.parent.glob("*.part"))


def test_download_failures_say_what_to_do(installed, monkeypatch):
    installed("codec/model.pt", b"weights")
    probe = socket.socket()  # bind then close: nothing listens, so connecting is refused
    probe.bind(("127.0.0.1", 0))
    monkeypatch.setattr(repository, "RAW_FILES", f"http://127.0.0.1:{probe.getsockname()[1]}")
    probe.close()
    with pytest.raises(WeightsError, match=f"course-test/course holds weights/codec/model.pt "
                                           f"at v1; without internet.*{weights.MIRROR_VARIABLE}"):
        weights.path("codec/model.pt")
    repository.SETTING.write_text(json.dumps({"name": "", "ref": "main"}))
    with pytest.raises(WeightsError, match=f"{weights.MIRROR_VARIABLE}.*make badges REPO="):
        weights.path("codec/model.pt")


def test_record_keeps_every_line_when_trainings_finish_together(tmp_path, monkeypatch):
    # Each recorder reads the manifest, waits (a slow disk), then writes: without the lock,
    # all but the last writer's line would be lost.
    monkeypatch.setattr(weights, "MANIFEST", tmp_path / "weights.txt")
    monkeypatch.setattr(weights, "CHECKOUT", tmp_path)
    (tmp_path / "weights.txt").write_text("")
    read = weights.checksums

    def slow_read():
        sums = read()
        time.sleep(0.05)
        return sums

    monkeypatch.setattr(weights, "checksums", slow_read)
    files = []
    for index in range(6):
        files.append(tmp_path / "codec" / f"stage{index}.pt")
        files[-1].parent.mkdir(exist_ok=True)
        files[-1].write_bytes(bytes([index]))
    threads = [threading.Thread(target=weights.record, args=([file],)) for file in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = (tmp_path / "weights.txt").read_text().splitlines()
    assert sorted(line.split()[1] for line in lines) == [f"codec/stage{i}.pt" for i in range(6)]
    assert not list(tmp_path.glob("*.tmp"))


def test_record_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(weights, "MANIFEST", tmp_path / "weights.txt")
    monkeypatch.setattr(weights, "CHECKOUT", tmp_path)
    (tmp_path / "weights.txt").write_text("")
    (tmp_path / "codec").mkdir()
    (tmp_path / "codec" / "m.pt").write_bytes(b"m")
    weights.main(["record", str(tmp_path / "codec" / "m.pt")])
    assert "recorded 1 file(s)" in capsys.readouterr().out
    assert weights.checksums() == {"codec/m.pt": hashlib.sha256(b"m").hexdigest()}
    with pytest.raises(SystemExit):
        weights.main(["record", str(tmp_path / "codec" / "missing.pt")])
    assert "no such file" in capsys.readouterr().err
