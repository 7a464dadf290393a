"""The README's benchmark tables, made from the committed Kodak run in ``results/kodak/``.

    python tools/readme_results.py          rewrite the tables in README.md
    python tools/readme_results.py --check  exit 1 if README.md differs from the results

The tables sit between the markers ``<!-- results:kodak -->`` and ``<!-- /results:kodak -->``.
``tests/test_readme_results.py`` fails when they differ from what this script makes, so a
number in the README can only come from the results (rerun ``python -m course_lib bench
--images data/kodak --out results/kodak`` and then this script).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "kodak"
README = ROOT / "README.md"
BEGIN, END = "<!-- results:kodak -->", "<!-- /results:kodak -->"


def _rows(name: str) -> list[dict]:
    with (RESULTS / name).open(newline="") as stream:
        return list(csv.DictReader(stream))


def _percent(text: str) -> str:
    value = float(text) if text else math.nan
    return "n/a" if math.isnan(value) else f"{value:+.1f} %"


def tables() -> str:
    """The Markdown between the markers."""
    results = json.loads((RESULTS / "results.json").read_text())
    images = sorted({row["image"] for row in results})
    labels = {}
    sys.path.insert(0, str(ROOT))
    from course_lib import benchmark

    for name, codec in benchmark.codecs().items():
        labels[name] = codec.label
    lines = [BEGIN, "",
             f"Kodak, {len(images)} images, one run of `python -m course_lib bench` "
             "([report](results/kodak/report.md): machine, settings, RD plots, the BD-rate "
             "matrix and times). BD-rate against JPEG 4:2:0 with optimised Huffman tables: "
             "negative = fewer bits at equal quality.", "",
             "| lossy codec | BD-rate, PSNR | BD-rate, MS-SSIM |", "|---|---:|---:|"]
    for row in _rows("bd_rate_vs_jpeg.csv"):
        codec = row["codec"]
        lines.append(f"| {labels.get(codec, codec)} | {_percent(row['bd_rate_psnr_percent'])} "
                     f"| {_percent(row['bd_rate_ms_ssim_percent'])} |")
    lossless = _rows("lossless.csv")
    if lossless:
        lines += ["", "| lossless codec | bits per subpixel | against PNG |", "|---|---:|---:|"]
        for row in lossless:
            codec = row["codec"]
            lines.append(f"| {labels.get(codec, codec)} | {row['bpsp (mean)']} | "
                         f"{row['vs PNG'] or '—'} |")
    lines += ["", END]
    return "\n".join(lines)


def updated(readme: str) -> str:
    """``readme`` with the text between the markers replaced by :func:`tables`."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} section")
    return readme[:start] + tables() + readme[end + len(END):]


def main(argv: list[str]) -> int:
    readme = README.read_text(encoding="utf-8")
    new = updated(readme)
    if "--check" in argv:
        if new != readme:
            print("README.md's benchmark tables differ from results/kodak: run "
                  "python tools/readme_results.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
