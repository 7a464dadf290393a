"""The course's one repository setting and what names it: the badges of README.md and of the
notebooks' titles, and the notebooks' Colab setup (course_lib.repository, `make badges`)."""

import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from course_lib import repository
from course_lib.repository import Repository

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(path.name for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WRITTEN = ["README.md", *(f"notebooks/{name}" for name in NOTEBOOKS)]


def _copy_course(folder: Path) -> Path:
    """README.md, the notebooks and the setting of this checkout, copied into ``folder``."""
    for name in [*WRITTEN, "course_lib/repository.json"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory):
    """A copy of the course with everything written again from the recorded setting."""
    course = _copy_course(tmp_path_factory.mktemp("course"))
    repository.write(course, repository.setting())
    return course


@pytest.mark.parametrize("name", WRITTEN)
def test_committed_files_agree_with_the_setting(rewritten, name):
    in_step = (rewritten / name).read_text() == (ROOT / name).read_text()
    assert in_step, (
        f"{name} is out of step with course_lib/repository.json: run `make badges` "
        "(or .venv/bin/python -m course_lib.repository)")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _setup_index(cells: list[dict]) -> int:
    return next(index for index, cell in enumerate(cells) if cell["cell_type"] == "code")


def test_badges_and_colab_setup_for_a_fork(tmp_path, capsys):
    course = _copy_course(tmp_path)
    repository.main(["alice/course", "--ref", "v2", "--root", str(course)])
    setting = json.loads((course / "course_lib" / "repository.json").read_text())
    assert setting == {"name": "alice/course", "ref": "v2"}
    readme = (course / "README.md").read_text()
    first = "notebooks/00_images_bits_and_codecs.ipynb"
    assert (f"[![Open in Colab]({repository.COLAB_BADGE})](https://colab.research.google.com/"
            f"github/alice/course/blob/v2/{first})") in readme
    assert (f"[![Launch Binder]({repository.BINDER_BADGE})](https://mybinder.org/v2/gh/"
            f"alice/course/v2?urlpath=lab/tree/{first})") in readme
    for name in NOTEBOOKS:
        before, after = _cells(ROOT / "notebooks" / name), _cells(course / "notebooks" / name)
        title = "".join(after[0]["source"])
        assert title.startswith("# ") and title.count("\n") > 3
        assert f"alice/course/blob/v2/notebooks/{name})" in title
        assert f"alice/course/v2?urlpath=lab/tree/notebooks/{name})" in title
        setup = _setup_index(after)
        code = "".join(after[setup]["source"])
        colab = code.split(repository.COLAB_BLOCK)[1].splitlines()
        assert colab[0] == '    %pip install -q "course_lib @ git+https://github.com/alice/course@v2"'
        assert not colab[1].startswith(" "), "the block is the install line alone"
        # nothing else changes: other cells, outputs, metadata
        for cell in (after[0], after[setup]):
            cell.pop("source")
        for cell in (before[0], before[setup]):
            cell.pop("source")
        assert after == before
    capsys.readouterr()
    repository.main(["--root", str(course)])  # again from the recorded setting: no change
    assert capsys.readouterr().out.startswith("alice/course at v2: 0 file(s) changed")


def test_without_a_repository_the_setup_cell_stops_on_colab_only(monkeypatch):
    code = ("import sys\n" + repository.COLAB_BLOCK
            + "".join(repository.colab_lines(Repository(""))))
    exec(code, {})  # not on Colab: nothing happens
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    with pytest.raises(RuntimeError, match="No public repository.*make badges REPO=owner/name"):
        exec(code, {})


def test_badge_markers_are_added_under_the_title_then_replaced():
    lines = repository.badge_lines(Repository("a/b"), "01_x.ipynb")
    added = repository.with_badges("# Title\n\nBody\n", lines)
    assert added == "# Title\n\n<!-- badges -->\n" + "".join(lines) + "<!-- /badges -->\n\nBody\n"
    assert repository.with_badges(added, []) == (
        "# Title\n\n<!-- badges -->\n<!-- /badges -->\n\nBody\n")


def test_bad_settings_and_folders_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="owner/name"):
        Repository("https://github.com/alice/course")
    with pytest.raises(ValueError, match="branch or tag"):
        Repository("alice/course", "a b")
    with pytest.raises(ValueError, match="setup cell"):
        repository.with_colab_setup("import sys\n", Repository("alice/course"))
    with pytest.raises(SystemExit):
        repository.main(["github.com/alice/course", "--root", str(_copy_course(tmp_path))])
    assert "owner/name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        repository.main(["alice/course", "--root", str(tmp_path / "nowhere")])
    assert "not a checkout of the course" in capsys.readouterr().err
