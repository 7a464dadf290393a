"""The README's benchmark tables are the committed Kodak results, not numbers typed by hand:
tools/readme_results.py makes them from results/kodak/, and here they must agree."""

import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
readme_results = importlib.import_module("readme_results")  # tools/readme_results.py


def test_readme_tables_are_the_committed_results():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_results.updated(readme) == readme, (
        "README.md's benchmark tables differ from results/kodak: run "
        "python tools/readme_results.py")


def test_the_committed_run_covers_all_of_kodak_without_errors():
    rows = json.loads((ROOT / "results" / "kodak" / "results.json").read_text())
    assert {row["image"] for row in rows} == {f"kodim{i:02d}.png" for i in range(1, 25)}
    assert not [row for row in rows if row["error"]]
    assert all(row["exact"] for row in rows if row["lossless"])
    codecs = {row["codec"] for row in rows}
    assert {"learned", "jpeg", "webp", "avif", "jxl", "png"} <= codecs


def test_a_changed_number_is_caught(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(readme_results.BEGIN)
    row = readme.index("| ", readme.index("|---", start))
    digit = next(i for i in range(row, len(readme)) if readme[i].isdigit())
    changed = readme[:digit] + str((int(readme[digit]) + 1) % 10) + readme[digit + 1:]
    assert readme_results.updated(changed) != changed
