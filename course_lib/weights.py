"""Shipped weights: one checksum list, one way to find the files, fetched on first use.

The course ships trained models and their training logs in the repository's ``weights/``
folder, one sub-folder per group: ``autoencoders`` (notebooks 03-04), ``notebook06``,
``codec`` (notebook 07, the command line), ``cnn_jpeg`` (notebook 08) and ``lossless``
(notebook 09, ``encode --lossless --learned``). Their sha256 sums
are listed in one file inside the package, ``course_lib/manifests/weights.txt``
(``sha256sum`` output, paths relative to
``weights/``: ``cd weights && sha256sum -c ../course_lib/manifests/weights.txt`` checks a
checkout), so that an installed ``course_lib`` can verify them too. :func:`path` gives a
verified local copy of one file, :func:`folder` of a whole group, found

* in the folder named by ``$COURSE_WEIGHTS_MIRROR`` if set, laid out like ``weights/``
  (classrooms behind a firewall, CI, an installed ``course_lib`` with a copy of the folder);
* else in the ``weights/`` folder of the course checkout this module belongs to (``make lab``,
  Binder);
* else (``pip install`` from git, Colab) downloaded on first use from the course's public
  repository (:mod:`course_lib.repository`) into ``<data folder>/weights``
  (:func:`course_lib.datasets.data_dir`: ``$COURSE_DATA_DIR``, or ``~/.cache/course_lib``).

A file whose sha256 is not the listed one is refused. The commands that make weights record
their sums with :func:`record` (``python -m course_lib.weights record FILE...``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from . import repository
from .datasets import data_dir, download, read_manifest, sha256_of

MIRROR_VARIABLE = "COURSE_WEIGHTS_MIRROR"
MANIFEST = Path(__file__).parent / "manifests" / "weights.txt"
CHECKOUT = Path(__file__).resolve().parent.parent / "weights"


class WeightsError(RuntimeError):
    """Shipped weights missing, damaged or out of reach; the message says what to do."""


def checksums() -> dict[str, str]:
    """``{path relative to weights/: sha256}`` of every shipped file."""
    return {name: digest for digest, name in read_manifest(MANIFEST)}


def _root() -> Path:
    if os.environ.get(MIRROR_VARIABLE):
        return Path(os.environ[MIRROR_VARIABLE]).expanduser()
    if CHECKOUT.is_dir():
        return CHECKOUT
    return data_dir() / "weights"


def path(name: str) -> Path:
    """A verified local copy of the shipped file ``name``, e.g. ``"codec/mean-scale-vr.pt"``."""
    expected = checksums().get(name)
    if expected is None:
        raise WeightsError(f"{name!r} is not a shipped file (see {MANIFEST})")
    root = _root()
    file = root / name
    if os.environ.get(MIRROR_VARIABLE):
        _check(file, expected, f"copy the course repository's weights/{name} there (the "
                               f"version that goes with this course_lib), or unset "
                               f"{MIRROR_VARIABLE}")
    elif root == CHECKOUT:
        _check(file, expected, f"restore it with `git checkout -- weights/{name}`, or if you "
                               "trained it anew, record it with `python -m course_lib.weights "
                               f"record weights/{name}`")
    elif not file.is_file() or sha256_of(file) != expected:
        _download(name, expected, file)  # the copy appears only once its sha256 matches
    return file


def _check(file: Path, expected: str, remedy: str) -> None:
    if not file.is_file():
        raise WeightsError(f"{file} is missing: {remedy}.")
    actual = sha256_of(file)
    if actual != expected:
        raise WeightsError(f"{file} is damaged or not the shipped version: sha256 "
                           f"{actual[:16]}… instead of {expected[:16]}…; {remedy}.")


def _download(name: str, expected: str, file: Path) -> None:
    repo = repository.setting()
    if not repo.name:
        raise WeightsError(
            f"course_lib is installed without the course's weights/ folder and names no "
            f"public repository to download {name} from. Set {MIRROR_VARIABLE} to a copy of "
            "that folder, or install course_lib from a fork of the course in which `make "
            "badges REPO=owner/name` was run.")
    file.parent.mkdir(parents=True, exist_ok=True)
    download(repository.file_url(repo, f"weights/{name}"), expected, file, WeightsError,
             f"Check that {repo.name} holds weights/{name} at {repo.ref}; without internet "
             f"access, set {MIRROR_VARIABLE} to a copy of the course's weights/ folder")


def folder(group: str) -> Path:
    """A local folder holding every shipped file of ``group`` (models and training logs),
    verified; what is missing is fetched first."""
    names = [name for name in checksums() if name.startswith(f"{group}/")]
    if not names:
        groups = sorted({name.split("/")[0] for name in checksums()})
        raise WeightsError(f"no shipped weights group {group!r}; groups: {groups}")
    for name in names:
        path(name)
    return _root() / group


def record(files) -> list[str]:
    """Write the sha256 of those of ``files`` that lie in the checkout's ``weights/`` folder
    into the manifest (no other file is shipped); the names recorded."""
    digests = {}
    for file in map(Path, files):
        if file.resolve().is_relative_to(CHECKOUT):
            digests[file.resolve().relative_to(CHECKOUT).as_posix()] = sha256_of(file)
    if digests:
        # Two trainings may finish at the same time: read, update and replace the manifest
        # under a lock, so that neither drops the other's lines, and atomically, so that a
        # reader never sees half a file.
        with _manifest_lock():
            sums = checksums() | digests
            partial = MANIFEST.with_name(MANIFEST.name + f".{os.getpid()}.tmp")
            partial.write_text("".join(f"{sums[name]}  {name}\n" for name in sorted(sums)))
            os.replace(partial, MANIFEST)
    return list(digests)


@contextlib.contextmanager
def _manifest_lock():
    """An exclusive lock on ``MANIFEST.lock`` (POSIX ``flock``; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: one training at a time
        yield
        return
    with open(MANIFEST.with_name(MANIFEST.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.weights",
        description="record FILE...: write the sha256 of new weights or training logs in "
                    "weights/ into course_lib/manifests/weights.txt (the export commands do).")
    parser.add_argument("command", choices=["record"])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    missing = [str(file) for file in args.files if not file.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    recorded = record(args.files)
    left_out = len(args.files) - len(recorded)
    print(f"recorded {len(recorded)} file(s) in {MANIFEST}"
          + (f"; {left_out} outside {CHECKOUT} left out (not shipped)" if left_out else ""))


if __name__ == "__main__":
    main()
