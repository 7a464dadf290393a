"""The teacher pack (teacher/): one notes page per notebook, and links and notebook names that
point at files that exist. Reads Markdown only; no notebook is executed."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "teacher"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PACK = sorted(TEACHER.rglob("*.md"))

# [text](target) and [text](target "title"); reference definitions: [label]: target
INLINE_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
NOTEBOOK_NAME = re.compile(r"(?<!\w)(\d\d_[a-z][a-z0-9_]*)(?:\.ipynb)?\b")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> str:
    """The text without fenced code blocks (links are not followed inside them)."""
    return FENCE.sub("", text)


def _links(text: str) -> list[str]:
    prose = CODE_SPAN.sub("", _prose(text))
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def _anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors, seen = set(), {}
    for line in _prose(markdown.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_the_pack_exists():
    assert NOTEBOOKS, "no notebooks found under notebooks/"
    for name in ("README.md", "reading.md"):
        assert (TEACHER / name).is_file(), f"teacher/{name} is missing"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_every_notebook_has_notes(notebook):
    notes = TEACHER / "notes" / f"{notebook.name[:2]}.md"
    assert notes.is_file(), f"{notebook.name} has no notes: write {_relative(notes)}"
    assert notebook.name in notes.read_text(encoding="utf-8"), (
        f"{_relative(notes)} does not name its notebook {notebook.name}")


def test_every_notes_page_belongs_to_a_notebook():
    numbers = {notebook.name[:2] for notebook in NOTEBOOKS}
    orphans = [_relative(page) for page in sorted((TEACHER / "notes").glob("*.md"))
               if page.stem not in numbers]
    assert not orphans, f"notes for notebooks that do not exist: {orphans}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_readme_names_every_notebook(notebook):
    readme = (TEACHER / "README.md").read_text(encoding="utf-8")
    assert notebook.stem in readme, f"teacher/README.md does not name {notebook.stem}"


@pytest.mark.parametrize("page", PACK, ids=lambda path: _relative(path))
def test_relative_links_point_to_files(page):
    broken = []
    for target in _links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{_relative(page)} has broken links: {broken}"


@pytest.mark.parametrize("page", PACK, ids=lambda path: _relative(path))
def test_notebook_names_exist(page):
    stems = {notebook.stem for notebook in NOTEBOOKS}
    named = set(NOTEBOOK_NAME.findall(page.read_text(encoding="utf-8")))
    unknown = sorted(named - stems)
    assert not unknown, f"{_relative(page)} names notebooks that do not exist: {unknown}"
