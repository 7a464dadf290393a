"""Exercises judge the student's own function, and the student copies hold no solution.

Every exercise is three cells: the student's stub (tag ``exercise``), the checker that judges
the student's function (tag ``exercise``), and the solution (tag ``solution``, source hidden)
under names of its own, judged by the same checker. The static tests hold every notebook to
that shape; the executed ones type a wrong answer into each notebook and generate and run the
student copies (``make student``), as a student would.
"""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_lib import check

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [path.name[:2] for path in NOTEBOOKS]

# One typical mistake per notebook, typed into its first exercise.
WRONG_ANSWERS = {
    "00": "def my_bpp(num_bytes, height, width):\n"
          "    return num_bytes / (height * width)  # bytes, not bits\n\n"
          "def my_ratio(num_bytes, height, width):\n"
          "    raise NotImplementedError\n",
    "01": "def correlate_1d(signal, weights):\n"
          "    return np.convolve(signal, weights, mode='valid')  # flips the weights\n",
    "02": "def average_pool_blocks(x, f):\n    return x[:, :, ::f, ::f]  # subsamples\n",
    "03": "def dense_parameter_count(tile, hidden=(128, 64, 32)):\n"
          "    widths = [3 * tile * tile, *hidden]\n"
          "    return 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))  # no biases\n",
    "04": "def my_entropy(pmf):\n"
          "    pmf = np.asarray(pmf, dtype=float)\n"
          "    pmf = pmf[pmf > 0] / pmf.sum()\n"
          "    return float(-(pmf * np.log(pmf)).sum())  # nats, not bits\n",
    "05": "def my_zigzag(n):\n    return np.arange(n * n)  # row by row\n",
    "06": "def rd_loss(output, x, lmbda):\n"
          "    bits = sum(-torch.log2(p).flatten(1).sum(dim=1)\n"
          "               for p in output['likelihoods'].values())\n"
          "    mse = ((output['x_hat'] - x) ** 2).flatten(1).mean(dim=1)\n"
          "    return (bits / (x.shape[-2] * x.shape[-1]) + lmbda * mse).mean()  # no 255**2\n",
    "07": "def bin_mass(y_hat, mu, sigma):  # the density at y_hat, not the mass of its bin\n"
          "    return torch.exp(-0.5 * ((y_hat - mu) / sigma) ** 2) / (sigma * 2.5066282746)\n",
    "08": "def my_bisect_quality(psnr_of, target):\n"
          "    low, high = 1, 95\n"
          "    while low < high:\n"
          "        middle = (low + high + 1) // 2\n"
          "        if psnr_of(middle) < target:\n"
          "            low = middle\n"
          "        else:\n"
          "            high = middle - 1\n"
          "    return low  # the last quality below the target, one too low\n",
    "09": "def my_paeth(a, b, c):\n"
          "    p = a + b - c\n"
          "    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)\n"
          "    return np.where((pa < pb) & (pa < pc), a, np.where(pb < pc, b, c))  # ties to c\n",
    "10": "def rate_and_psnr(data, original, decoded):\n"
          "    height, width = original.shape[:2]\n"
          "    mse = np.mean((original - decoded) ** 2)  # uint8: the difference wraps around\n"
          "    return 8 * len(data) / (height * width), 10 * np.log10(255**2 / mse)\n",
}


def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", [])


def _source(cell) -> str:
    return "".join(cell["source"])


def _exercises(cells) -> list[tuple[int, int, int]]:
    """(stub, checker, solution) cell indices, one triple per solution cell."""
    return [(i - 2, i - 1, i) for i, cell in enumerate(cells) if "solution" in _tags(cell)]


def _bound_names(source: str) -> set[str]:
    """The names a cell binds in the notebook's namespace (not inside its functions)."""
    names, todo = set(), list(ast.parse(source).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue  # their bodies bind local names only
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        todo.extend(ast.iter_child_nodes(node))
    return names


def _python(source: str) -> str:
    """A code cell's source with IPython's %magic and !shell lines replaced by ``pass``."""
    lines = source.splitlines()
    return "\n".join(line[: len(line) - len(line.lstrip())] + "pass"
                     if line.lstrip().startswith(("%", "!")) else line for line in lines)


@pytest.fixture(params=NOTEBOOKS, ids=IDS)
def notebook(request):
    return request.param, json.loads(request.param.read_text())


def test_every_exercise_is_stub_then_checker_then_hidden_solution(notebook):
    path, nb = notebook
    cells = nb["cells"]
    assert len(_exercises(cells)) >= 3, f"{path.name}: at least three exercises"
    for stub, checker, solution in _exercises(cells):
        where = f"{path.name}, cell {solution}"
        assert "exercise" in _tags(cells[stub]) and "exercise" in _tags(cells[checker]), where
        assert "raise NotImplementedError" in _source(cells[stub]), where
        assert cells[solution]["metadata"].get("jupyter", {}).get("source_hidden"), where
        checker_tree = ast.parse(_source(cells[checker]))
        decorated = [node.name for node in checker_tree.body if isinstance(node, ast.FunctionDef)
                     and any(ast.unparse(d) == "check.exercise" for d in node.decorator_list)]
        assert len(decorated) == 1, f"{where}: one @check.exercise checker before the solution"
        stub_names = [node.name for node in ast.parse(_python(_source(cells[stub]))).body
                      if isinstance(node, ast.FunctionDef)]
        call = f"{decorated[0]}({', '.join(stub_names)})"
        assert call in _source(cells[checker]), f"{where}: the checker judges {stub_names}"
        assert re.search(rf"^{decorated[0]}\.solution\(", _source(cells[solution]), re.M), where


def test_solutions_bind_no_name_that_another_cell_uses(notebook):
    path, nb = notebook
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    solution_names = set().union(*(_bound_names(_source(cell)) for cell in code
                                   if "solution" in _tags(cell)))
    other_names = set().union(*(_bound_names(_python(_source(cell))) for cell in code
                                if "solution" not in _tags(cell)))
    rebound = sorted(solution_names & other_names)
    assert not rebound, f"{path.name}: a solution rebinds {rebound}"


def _execute(nb, monkeypatch, strict: bool):
    monkeypatch.setenv("COURSE_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv(check.STRICT_VARIABLE, "1" if strict else "0")
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()
    return nb


def _text(cell) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", [])
                   if output.get("output_type") == "stream")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_a_wrong_answer_prints_a_failure_and_the_solution_still_passes(path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    stub, checker, solution = _exercises(nb.cells)[0]
    nb.cells[stub].source = WRONG_ANSWERS[path.name[:2]]
    _execute(nb, monkeypatch, strict=False)  # the whole notebook runs, wrong answer and all
    assert "✗ failed" in _text(nb.cells[checker]), _text(nb.cells[checker])
    assert "✓ passed" in _text(nb.cells[solution]) and "✗" not in _text(nb.cells[solution])


@pytest.fixture(scope="session")
def student_copies(tmp_path_factory):
    """The copies `make student` writes, made with the same nbconvert configuration."""
    folder = tmp_path_factory.mktemp("student")
    subprocess.run([sys.executable, "-m", "nbconvert", "--log-level=WARN", "--config",
                    str(ROOT / "tools" / "student_copies.py"), "--output-dir", str(folder),
                    *map(str, NOTEBOOKS)], check=True)
    return folder


def test_make_student_uses_the_same_configuration():
    makefile = (ROOT / "Makefile").read_text()
    assert "--config tools/student_copies.py" in makefile


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_student_copy_holds_no_solution(path, student_copies):
    original = nbformat.read(path, as_version=4)
    copy = nbformat.read(student_copies / path.name, as_version=4)
    solution_lines = {line.strip() for cell in original.cells if "solution" in _tags(cell)
                      for line in cell.source.splitlines()}
    other_lines = {line.strip() for cell in original.cells if "solution" not in _tags(cell)
                   for line in cell.source.splitlines()}
    secret = {line for line in solution_lines - other_lines
              if len(line) > 8 and not line.startswith("#")}
    assert secret, "the solutions have lines of their own"
    copy_lines = {line.strip() for cell in copy.cells for line in cell.source.splitlines()}
    assert not secret & copy_lines, f"solution code leaks: {sorted(secret & copy_lines)[:3]}"
    assert not [cell for cell in copy.cells if "solution" in _tags(cell)]
    assert len(copy.cells) == len(original.cells) - len(_exercises(original.cells))
    for cell in copy.cells:
        if "exercise" in _tags(cell):
            assert not cell.outputs, "exercise outputs are cleared"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_student_copy_runs_and_says_what_is_left_to_do(path, student_copies, monkeypatch):
    nb = nbformat.read(student_copies / path.name, as_version=4)
    _execute(nb, monkeypatch, strict=True)  # an error in any cell raises here
    checkers = [cell for cell in nb.cells if "exercise" in _tags(cell)
                and "@check.exercise" in cell.source]
    assert len(checkers) >= 3
    for cell in checkers:
        assert "not implemented yet" in _text(cell) and "✗" not in _text(cell), _text(cell)
