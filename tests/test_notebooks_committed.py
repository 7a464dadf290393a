"""Committed notebooks must be cleanly executed, modest in size, and follow the course format.

nbval re-runs every notebook (in fast mode in CI); these checks look at what is committed,
which is what a reader sees on GitHub.
"""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted(
    (Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")
)
MAX_BYTES = 3_000_000


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.fixture(params=NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def notebook(request):
    return request.param, json.loads(request.param.read_text())


def _code_cells(nb):
    return [
        cell for cell in nb["cells"] if cell["cell_type"] == "code" and "".join(cell["source"])
    ]


def test_executed_in_order_without_errors(notebook):
    path, nb = notebook
    counts = [cell["execution_count"] for cell in _code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts[:8]}…: Restart & Run All, then commit"
    )
    for cell in _code_cells(nb):
        for output in cell["outputs"]:
            assert output["output_type"] != "error", (
                f"{path.name}: a cell raised {output['ename']}"
            )


def test_size_is_modest(notebook):
    path, _ = notebook
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"


def test_course_format(notebook):
    path, nb = notebook
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.startswith("# ")
    assert "learn" in first.lower() and "time" in first.lower()
    sources = ["".join(cell["source"]) for cell in _code_cells(nb)]
    assert any("google.colab" in source for source in sources[:2]), "setup cell comes first"
    solutions = [
        cell for cell in _code_cells(nb) if "solution" in cell["metadata"].get("tags", [])
    ]
    assert len(solutions) >= 3, f"{path.name}: at least three exercises with tagged solutions"
    assert sum("NotImplementedError" in source for source in sources) >= 3
    assert sum("check." in source for source in sources) >= 3
    assert any("widgets" in source for source in sources), "an interactive demo"
    images = [
        out
        for cell in _code_cells(nb)
        for out in cell["outputs"]
        if "image/svg+xml" in out.get("data", {})
    ]
    assert not images, "figures are PNG, not SVG"
