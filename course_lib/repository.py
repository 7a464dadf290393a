"""The course's public GitHub repository: where Colab installs ``course_lib`` from, and where an
installed ``course_lib`` downloads its weights (:mod:`course_lib.weights`).

The one setting is ``course_lib/repository.json``, ``{"repository": "owner/name", "ref":
"main"}``, shipped with the package. It is empty in the course as published here; a teacher
who forks the course runs, in the fork,

    make badges REPO=owner/name                (REF=branch when it is not main)

which records the setting and writes everything that names the repository:

* the "Open in Colab" and Binder badges in README.md and in each notebook's title cell,
  between the lines ``<!-- badges -->`` and ``<!-- /badges -->`` (added under the title when
  missing);
* each notebook's Colab setup, the ``if "google.colab" in sys.modules:`` block of its first
  code cell: it installs ``course_lib`` from the repository or, with none set, stops with
  what to do.

``make badges`` without ``REPO`` writes them again from the recorded setting.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

SETTING = Path(__file__).with_name("repository.json")
RAW_FILES = "https://raw.githubusercontent.com"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"
BEGIN, END = "<!-- badges -->\n", "<!-- /badges -->\n"
COLAB_BLOCK = 'if "google.colab" in sys.modules:\n'
NOT_SET = '''\
    raise RuntimeError("No public repository is set for this copy of the course, so Colab "
                       "cannot install course_lib: in your fork of the course, run "
                       "`make badges REPO=owner/name`, commit, and open the notebooks there.")
'''  # the Colab block's body while no repository is set
README_NOTEBOOK = "00_images_bits_and_codecs.ipynb"  # where the README's badges lead
_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_REF = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]*")


@dataclass(frozen=True)
class Repository:
    name: str  # "owner/name" on GitHub; "" when not set
    ref: str = "main"  # branch or tag

    def __post_init__(self):
        if self.name and not _NAME.fullmatch(self.name):
            raise ValueError(f"the repository must read owner/name (what follows github.com/), "
                             f"not {self.name!r}")
        if not _REF.fullmatch(self.ref):
            raise ValueError(f"{self.ref!r} is not a git branch or tag name")


def setting(path: Path | None = None) -> Repository:
    """The repository recorded in ``path`` (default: :data:`SETTING`); ``name`` is empty when
    none is set."""
    return Repository(**json.loads(Path(path or SETTING).read_text()))


def file_url(repo: Repository, path: str) -> str:
    """Address of the raw bytes of ``path`` (relative to the repository's top) at ``repo.ref``."""
    return f"{RAW_FILES}/{repo.name}/{repo.ref}/{path}"


def install_requirement(repo: Repository) -> str:
    """What ``pip install`` takes to install ``course_lib`` from the repository at its ref."""
    return f"course_lib @ git+https://github.com/{repo.name}@{repo.ref}"


def badge_lines(repo: Repository, notebook: str) -> list[str]:
    """The Markdown between the badge markers: Colab and Binder links to ``notebook``."""
    if not repo.name:
        return []
    colab = f"https://colab.research.google.com/github/{repo.name}/blob/{repo.ref}/notebooks/"
    binder = f"https://mybinder.org/v2/gh/{repo.name}/{repo.ref}?urlpath=lab/tree/notebooks/"
    return [f"[![Open in Colab]({COLAB_BADGE})]({colab}{notebook})\n",
            f"[![Launch Binder]({BINDER_BADGE})]({binder}{notebook})\n"]


def colab_lines(repo: Repository) -> list[str]:
    """The body of a notebook's ``if "google.colab" in sys.modules:`` block."""
    if repo.name:
        return [f'    %pip install -q "{install_requirement(repo)}"\n']
    return NOT_SET.splitlines(keepends=True)


def with_badges(markdown: str, lines: list[str]) -> str:
    """``markdown`` with ``lines`` between the badge markers, which go under its first line
    (the title) when it has none."""
    block = BEGIN + "".join(lines) + END
    if BEGIN in markdown and END in markdown.split(BEGIN, 1)[1]:
        before, rest = markdown.split(BEGIN, 1)
        return before + block + rest.split(END, 1)[1]
    title, _, rest = markdown.partition("\n")
    rest = rest.lstrip("\n")
    return f"{title}\n\n{block}" + (f"\n{rest}" if rest else "")


def with_colab_setup(code: str, repo: Repository) -> str:
    """The setup cell ``code`` with the body of its Colab block written for ``repo``."""
    lines = code.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if COLAB_BLOCK not in lines:
        raise ValueError(f"the first code cell has no line {COLAB_BLOCK.strip()!r}: it is the "
                         "notebook's setup cell, restore that line")
    start = lines.index(COLAB_BLOCK) + 1
    end = start
    while end < len(lines) and lines[end].startswith((" ", "\t")):
        end += 1
    result = "".join(lines[:start] + colab_lines(repo) + lines[end:])
    return result if code.endswith("\n") else result[:-1]


def _set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)


def notebook_with(text: str, notebook: str, repo: Repository) -> str:
    """A notebook file's JSON text with its title badges and Colab setup written for ``repo``.

    The output keeps Jupyter's own layout (one-space indent, UTF-8), so that only the
    changed lines differ."""
    nb = json.loads(text)
    title = nb["cells"][0]
    if title["cell_type"] != "markdown":
        raise ValueError(f"{notebook}: the first cell must be the Markdown title cell")
    setup = next(cell for cell in nb["cells"] if cell["cell_type"] == "code")
    _set_source(title, with_badges("".join(title["source"]), badge_lines(repo, notebook)))
    _set_source(setup, with_colab_setup("".join(setup["source"]), repo))
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def write(root: Path, repo: Repository) -> list[Path]:
    """Record ``repo`` in ``root``'s setting, README.md and notebooks; the files it changed."""
    package = Path(root) / "course_lib"
    updates = {package / SETTING.name: json.dumps(asdict(repo)) + "\n"}
    readme = Path(root) / "README.md"
    updates[readme] = with_badges(readme.read_text(), badge_lines(repo, README_NOTEBOOK))
    for path in sorted((Path(root) / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        updates[path] = notebook_with(path.read_text(), path.name, repo)
    changed = []
    for path, text in updates.items():
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.repository",
        description="Record the course's public GitHub repository and write the Colab / "
                    "Binder badges and the Colab setup cells that name it (see the module "
                    "docstring). Without OWNER/NAME, write them from the recorded setting.")
    parser.add_argument("repo", nargs="?", metavar="OWNER/NAME",
                        help="the repository on GitHub, e.g. the fork a teacher made")
    parser.add_argument("--ref", help="branch or tag (default: main, or the recorded one)")
    parser.add_argument("--root", type=Path, default=SETTING.parent.parent,
                        help="the course checkout to write (default: this one)")
    args = parser.parse_args(argv)
    if not (args.root / "notebooks").is_dir():
        parser.error(f"{args.root} is not a checkout of the course (no notebooks/ folder); "
                     "run this in your clone of the course, or pass --root")
    current = setting(args.root / "course_lib" / SETTING.name)
    try:
        repo = Repository(args.repo or current.name,
                          args.ref or ("main" if args.repo else current.ref))
    except ValueError as error:
        parser.error(str(error))
    changed = write(args.root, repo)
    where = f"{repo.name} at {repo.ref}" if repo.name else "no repository set"
    print(f"{where}: {len(changed)} file(s) changed", *changed, sep="\n  ")


if __name__ == "__main__":
    main()
