"""Datasets: checksummed downloads, an offline mirror, and patch datasets for training.

Every file the course uses is listed in a manifest (``course_lib/manifests/<dataset>.txt``:
sha256, file name, upstream URL). :func:`fetch` puts a verified copy under the data folder:

* the data folder is ``$COURSE_DATA_DIR`` if set, else ``data/`` at the top of the course
  repository (or ``~/.cache/course_lib`` when ``course_lib`` is installed elsewhere);
* if ``$COURSE_DATA_MIRROR`` names a folder, files are copied from ``<mirror>/<dataset>/``
  instead of downloaded (classrooms behind a firewall, CI);
* downloads go to ``<file>.part`` and are renamed only after the sha256 matches, so an
  interrupted run never leaves a half file under the real name, and the next run resumes the
  ``.part`` with an HTTP range request.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import load_image

MIRROR_VARIABLE = "COURSE_DATA_MIRROR"
DATA_DIR_VARIABLE = "COURSE_DATA_DIR"
DOWNLOAD_TIMEOUT_S = 15.0
_MANIFESTS = Path(__file__).parent / "manifests"

DATASETS = {
    "kodak": "Kodak Lossless True Color Image Suite: 24 PNG test images (768x512)",
    "train_cid22": "CID22 512-px training split: 182 PNG (CC BY-SA 4.0)",
    "val_cid22": "CID22 512-px validation split: 40 PNG (CC BY-SA 4.0)",
    "train_bsds500": "BSDS500 train + test splits: 400 JPEG (research and education use)",
}
TRAINING_SETS = ("train_cid22", "train_bsds500")


class DatasetError(RuntimeError):
    """A dataset file could not be provided; the message says what to do."""


@dataclass(frozen=True)
class Entry:
    sha256: str
    name: str
    url: str


@cache
def manifest(dataset: str) -> tuple[Entry, ...]:
    """The files of ``dataset`` with their checksums and upstream URLs."""
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    return tuple(Entry(*fields) for fields in read_manifest(_MANIFESTS / f"{dataset}.txt"))


def read_manifest(path: Path) -> list[list[str]]:
    """The fields of each line of a manifest file; blank lines and ``#`` comments are skipped.

    Dataset manifests have ``sha256 name url`` per line, the weights manifest is ``sha256sum``
    output (:mod:`course_lib.weights`)."""
    return [line.split() for line in Path(path).read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def data_dir() -> Path:
    """Where verified dataset files are cached (see the module docstring); an installed
    course_lib keeps the weights it downloads in its ``weights/`` (:mod:`course_lib.weights`)."""
    if os.environ.get(DATA_DIR_VARIABLE):
        return Path(os.environ[DATA_DIR_VARIABLE]).expanduser()
    repo_data = Path(__file__).resolve().parent.parent / "data"
    if repo_data.is_dir():
        return repo_data
    return Path.home() / ".cache" / "course_lib"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_verified: set[Path] = set()


def fetch(dataset: str, name: str) -> Path:
    """Return the path of a verified local copy of one dataset file, fetching it if needed."""
    entries = {entry.name: entry for entry in manifest(dataset)}
    if name not in entries:
        raise DatasetError(f"{name!r} is not a file of dataset {dataset!r}")
    entry = entries[name]
    target = data_dir() / dataset / name
    if target in _verified:
        return target
    if target.is_file():
        if sha256_of(target) == entry.sha256:
            _verified.add(target)
            return target
        target.unlink()  # a damaged cached copy is simply fetched again
    target.parent.mkdir(parents=True, exist_ok=True)
    mirror = os.environ.get(MIRROR_VARIABLE)
    if mirror:
        _copy_from_mirror(Path(mirror).expanduser(), dataset, entry, target)
    else:
        download(entry.url, entry.sha256, target, DatasetError, _OFFLINE_ADVICE)
    _verified.add(target)
    return target


def _copy_from_mirror(mirror: Path, dataset: str, entry: Entry, target: Path) -> None:
    source = mirror / dataset / entry.name
    if not source.is_file():
        raise DatasetError(
            f"{MIRROR_VARIABLE}={str(mirror)!r} has no file {dataset}/{entry.name}. Point "
            f"{MIRROR_VARIABLE} at a folder holding {sorted(DATASETS)} sub-folders, or unset "
            "it to download from the original source."
        )
    actual = sha256_of(source)
    if actual != entry.sha256:
        raise DatasetError(
            f"Mirror file {source} is damaged: sha256 {actual[:16]}… does not match the "
            f"expected {entry.sha256[:16]}…. Replace it with a good copy (or unset "
            f"{MIRROR_VARIABLE} to download the original)."
        )
    partial = target.with_name(target.name + ".part")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


_OFFLINE_ADVICE = (f"Without internet access, set {MIRROR_VARIABLE} to a folder that mirrors "
                   f"the datasets (e.g. {MIRROR_VARIABLE}=../shared/datasets)")


def download(url: str, sha256: str, target: Path, error: type[Exception],
             offline_advice: str) -> None:
    """Download ``url`` to ``target`` through ``<target>.part``, renamed only once its sha256
    matches; a ``.part`` left by an interrupted run is resumed with an HTTP range request.
    Failures raise ``error`` whose message ends with ``offline_advice`` when unreachable."""
    partial = target.with_name(target.name + ".part")
    offset = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "course_lib"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            resumed = offset and response.status == 206
            with open(partial, "ab" if resumed else "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
        raise error(f"Could not download {url} ({err}). {offline_advice}; a partial download "
                    "is kept and resumed.") from None
    actual = sha256_of(partial)
    if actual != sha256:
        partial.unlink()
        raise error(f"Downloaded {url} but its sha256 {actual[:16]}… does not match the "
                    f"expected {sha256[:16]}…; the damaged file was removed. Run again to retry.")
    os.replace(partial, target)


def dataset_paths(dataset: str) -> list[Path]:
    """Fetch (if needed) and return the paths of every file of ``dataset``, sorted by name."""
    return [fetch(dataset, entry.name) for entry in manifest(dataset)]


def kodak_path(index: int) -> Path:
    """Path of Kodak image ``index`` (1..24)."""
    if not 1 <= int(index) <= 24:
        raise ValueError(f"Kodak images are numbered 1..24, not {index}")
    return fetch("kodak", f"kodim{int(index):02d}.png")


def load_kodak(index: int) -> np.ndarray:
    """Kodak image ``index`` (1..24) as uint8 RGB ``(H, W, 3)``."""
    return load_image(kodak_path(index))


def training_paths() -> list[Path]:
    """The course training set: CID22 training split + BSDS500 train/test (582 images)."""
    return [path for dataset in TRAINING_SETS for path in dataset_paths(dataset)]


class PatchDataset(Dataset):
    """Random (training) or central (evaluation) square patches from a list of image files.

    Each item is a float tensor ``(3, patch_size, patch_size)`` in [0, 1]. With
    ``train=True`` a random crop and random horizontal/vertical flips are applied (torchvision
    transforms v2); ``patches_per_image`` lets one epoch visit each image several times.
    Decoded images are kept in memory as uint8 (about 0.3 GB for the full training set).

    ``downscale=(p, smallest)``: with probability ``p`` a training patch is cropped from a
    copy of the image shrunk by a random factor between ``smallest`` and 1 (antialiased,
    never below the patch size): the same scene with more detail per pixel, so the model sees
    a range of scales rather than one camera's.
    """

    def __init__(
        self,
        paths,
        patch_size: int = 128,
        train: bool = True,
        patches_per_image: int = 1,
        downscale: tuple[float, float] | None = None,
    ):
        self.paths = [Path(path) for path in paths]
        if downscale is not None and not (0 <= downscale[0] <= 1 and 0 < downscale[1] <= 1):
            raise ValueError(f"downscale=(probability, smallest factor) needs a probability in "
                             f"[0, 1] and a factor in (0, 1], got {downscale}")
        self.downscale = downscale if train else None
        if not self.paths:
            raise DatasetError("PatchDataset got no image paths")
        self.patch_size = patch_size
        self.patches_per_image = patches_per_image
        # imported here: torchvision adds ~0.17 GB and ~1.5 s to every process that imports
        # course_lib.datasets, the codec's command line among them
        from torchvision.transforms import v2

        if train:
            self.transform = v2.Compose(
                [
                    v2.RandomCrop(patch_size, pad_if_needed=True, padding_mode="reflect"),
                    v2.RandomHorizontalFlip(),
                    v2.RandomVerticalFlip(),
                    v2.ToDtype(torch.float32, scale=True),
                ]
            )
        else:
            self.transform = v2.Compose(
                [v2.CenterCrop(patch_size), v2.ToDtype(torch.float32, scale=True)]
            )
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths) * self.patches_per_image

    def _image(self, index: int) -> torch.Tensor:
        if index not in self._cache:
            array = load_image(self.paths[index])
            self._cache[index] = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        return self._cache[index]

    def __getitem__(self, item: int) -> torch.Tensor:
        image = self._image(item % len(self.paths))
        if self.downscale is not None and torch.rand(()) < self.downscale[0]:
            from torchvision.transforms.v2 import functional

            height, width = image.shape[-2:]
            smallest = max(self.downscale[1], self.patch_size / min(height, width))
            if smallest < 1:
                factor = smallest + (1 - smallest) * float(torch.rand(()))
                size = [max(self.patch_size, round(height * factor)),
                        max(self.patch_size, round(width * factor))]
                image = functional.resize(image, size, antialias=True)
        return self.transform(image)


def main() -> None:
    """``python -m course_lib.datasets [name ...]``: fetch and verify datasets ahead of time."""
    import sys

    names = sys.argv[1:] or list(DATASETS)
    try:
        for name in names:
            paths = dataset_paths(name)
            print(f"{name}: {len(paths)} files verified in {paths[0].parent}")
    except DatasetError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
