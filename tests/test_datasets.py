import hashlib
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import datasets
from course_lib.datasets import DatasetError, Entry


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DATA_DIR_VARIABLE, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_manifests_list_every_file_with_a_checksum():
    sizes = {name: len(datasets.manifest(name)) for name in datasets.DATASETS}
    assert sizes == {"kodak": 24, "train_cid22": 182, "val_cid22": 40, "train_bsds500": 400}
    kodak = datasets.manifest("kodak")
    assert kodak[0].url == "http://r0k.us/graphics/kodak/kodak/kodim01.png"
    assert all(len(entry.sha256) == 64 for name in sizes for entry in datasets.manifest(name))


def test_kodak_is_fetched_and_verified(data_dir):
    """Through the mirror when COURSE_DATA_MIRROR is set (CI), else from the upstream URL."""
    path = datasets.kodak_path(7)
    assert path == data_dir / "kodak" / "kodim07.png"
    assert datasets.sha256_of(path) == datasets.manifest("kodak")[6].sha256
    assert datasets.load_kodak(7).shape in [(512, 768, 3), (768, 512, 3)]
    assert not list(data_dir.glob("kodak/*.part"))


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """A mirror folder holding a copy of Kodak image 1, made from the verified cache."""
    mirror = tmp_path / "mirror"
    (mirror / "kodak").mkdir(parents=True)
    shutil.copyfile(datasets.kodak_path(1), mirror / "kodak" / "kodim01.png")
    monkeypatch.setenv(datasets.MIRROR_VARIABLE, str(mirror))
    return mirror


def test_corrupted_mirror_file_is_rejected_with_a_clear_error(fake_mirror, data_dir):
    source = fake_mirror / "kodak" / "kodim01.png"
    data = bytearray(source.read_bytes())
    data[5000] ^= 0xFF
    source.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="damaged") as error:
        datasets.kodak_path(1)
    assert "kodim01.png" in str(error.value)
    assert not (data_dir / "kodak" / "kodim01.png").exists()


def test_missing_mirror_file_names_the_variable(fake_mirror, data_dir):
    with pytest.raises(DatasetError, match=datasets.MIRROR_VARIABLE):
        datasets.kodak_path(2)


def test_damaged_cached_copy_is_fetched_again(fake_mirror, data_dir):
    target = datasets.kodak_path(1)
    datasets._verified.clear()
    target.write_bytes(b"truncated")
    assert datasets.sha256_of(datasets.kodak_path(1)) == datasets.manifest("kodak")[0].sha256


def _serve(server, monkeypatch, payload: bytes, checksum: str | None = None):
    monkeypatch.delenv(datasets.MIRROR_VARIABLE, raising=False)
    server.files["/img.png"] = payload
    url = f"http://127.0.0.1:{server.server_address[1]}/img.png"
    entry = Entry(checksum or hashlib.sha256(payload).hexdigest(), "img.png", url)
    monkeypatch.setattr(datasets, "manifest", lambda name: (entry,))
    return entry


def test_download_verifies_and_writes_atomically(server, monkeypatch, data_dir):
    payload = np.random.default_rng(0).bytes(300_000)
    _serve(server, monkeypatch, payload)
    path = datasets.fetch("kodak", "img.png")
    assert path.read_bytes() == payload
    assert not path.with_name("img.png.part").exists()


def test_interrupted_download_resumes_with_a_range_request(server, monkeypatch, data_dir):
    payload = np.random.default_rng(1).bytes(300_000)
    _serve(server, monkeypatch, payload)
    partial = data_dir / "kodak" / "img.png.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(payload[:120_000])
    assert datasets.fetch("kodak", "img.png").read_bytes() == payload
    assert server.range_requests == [120_000]


def test_download_with_wrong_checksum_is_removed(server, monkeypatch, data_dir):
    _serve(server, monkeypatch, b"tampered bytes", checksum="0" * 64)
    with pytest.raises(DatasetError, match="does not match"):
        datasets.fetch("kodak", "img.png")
    assert not list((data_dir / "kodak").iterdir())


def test_no_network_and_no_mirror_names_the_variable(monkeypatch, data_dir):
    monkeypatch.delenv(datasets.MIRROR_VARIABLE, raising=False)
    probe = socket.socket()  # bind then close: nothing listens, so connecting is refused
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    entry = Entry("0" * 64, "img.png", f"http://127.0.0.1:{port}/img.png")
    monkeypatch.setattr(datasets, "manifest", lambda name: (entry,))
    with pytest.raises(DatasetError, match=datasets.MIRROR_VARIABLE):
        datasets.fetch("kodak", "img.png")


def test_bad_arguments():
    with pytest.raises(DatasetError, match="unknown dataset"):
        datasets.manifest("imagenet")
    with pytest.raises(ValueError, match="1..24"):
        datasets.kodak_path(25)
    with pytest.raises(DatasetError, match="not a file"):
        datasets.fetch("kodak", "kodim99.png")


def test_patch_dataset_crops_and_flips(tmp_path):
    from PIL import Image

    paths = []
    for index, size in enumerate([(40, 60), (50, 30)]):
        array = np.random.default_rng(index).integers(0, 256, (*size, 3), dtype=np.uint8)
        path = Path(tmp_path / f"{index}.png")
        Image.fromarray(array).save(path)
        paths.append(path)
    train = datasets.PatchDataset(paths, patch_size=32, patches_per_image=3)
    assert len(train) == 6
    torch.manual_seed(0)
    patches = torch.stack([train[i] for i in range(6)])
    assert patches.shape == (6, 3, 32, 32) and patches.dtype == torch.float32
    assert 0 <= patches.min() and patches.max() <= 1
    evaluation = datasets.PatchDataset(paths[:1], patch_size=32, train=False)
    expected = np.asarray(Image.open(paths[0]))[4:36, 14:46].transpose(2, 0, 1) / 255
    np.testing.assert_allclose(evaluation[0].numpy(), expected, atol=1e-6)
    with pytest.raises(DatasetError):
        datasets.PatchDataset([])
