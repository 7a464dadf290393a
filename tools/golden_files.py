"""Write the golden codec files that tests/test_golden.py pins: one per shipped model.

    python tools/golden_files.py        (from the repository root, with the Kodak mirror)

Each is kodim23's 128 x 192 crop at rows 160.., columns 320.. coded at rate setting 1.5 with
the shipped weights; the script prints the sha256 of each file and of its decoded pixels for
the test's table. Run it only when a model's weights change on purpose (the file format says
which weights made a file, so old golden files stop decoding then).
"""

import hashlib
from pathlib import Path

from course_lib import datasets
from course_lib.codecs import learned

FOLDER = Path(__file__).resolve().parent.parent / "tests" / "data" / "golden"
CROP = (slice(160, 288), slice(320, 512))
RATE = 1.5


def golden_image():
    return datasets.load_kodak(23)[CROP]


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    image = golden_image()
    for name in learned.SHIPPED_MODELS:
        data = learned.compress_image(image, RATE, learned.load_shipped(name))
        (FOLDER / f"{name}.licc").write_bytes(data)
        pixels = learned.decompress_image(data)
        print(f'    "{name}": ("{hashlib.sha256(data).hexdigest()}",\n'
              f'        "{hashlib.sha256(pixels.tobytes()).hexdigest()}"),')


if __name__ == "__main__":
    main()
