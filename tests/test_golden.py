"""Golden files: one per shipped model, made by tools/golden_files.py from a Kodak crop. The
bytes the encoder writes and the pixels the decoder gives are pinned by sha256, with the real
shipped weights: a change to the transforms, the entropy coder, the tables or the container
that would make old files decode differently (or new files differ) fails here."""

import hashlib
import importlib
import sys
from pathlib import Path

import pytest
import torch

from course_lib.codecs import learned

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
golden_files = importlib.import_module("golden_files")  # tools/golden_files.py

# (sha256 of the file, sha256 of the decoded uint8 pixels), from tools/golden_files.py
GOLDEN = {
    "mean-scale-vr": ("4ffa3f53c657118cafbd95e2dd0a9ae33dbde7c2fd9d3ca648c3ac1167169182",
        "c5a500ef0dc8ca78557f62eeef38483d551b9c60cc1e636195a6de0ee4a8503f"),
    "checkerboard-vr": ("e107685929c6316c1920e8bd3943de82530b916a35fd19781251a70f04dbdc8f",
        "6d50bf90ade38d5259a24f9f0a644aad200186aaaeb96dac9ed3cf767e7b5b50"),
}


def test_every_shipped_model_has_a_golden_file():
    assert set(GOLDEN) == set(learned.SHIPPED_MODELS)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_the_golden_file_decodes_to_its_pixels(name):
    data = (golden_files.FOLDER / f"{name}.licc").read_bytes()
    assert hashlib.sha256(data).hexdigest() == GOLDEN[name][0]
    assert learned.parse(data).model_id == learned.SHIPPED_MODELS.index(name)
    pixels = learned.decompress_image(data)
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == GOLDEN[name][1]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_the_encoder_writes_the_golden_bytes(name, threads):
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        data = learned.compress_image(golden_files.golden_image(), golden_files.RATE,
                                      learned.load_shipped(name))
    finally:
        torch.set_num_threads(previous)
    assert hashlib.sha256(data).hexdigest() == GOLDEN[name][0]
