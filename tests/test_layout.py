"""The library's layout, read from its source with ``ast``: no module uses another's private
names, no library module depends on a chapter's recipes or demos, and the README's map of the
library lists exactly the modules there are.

"Library" is everything in ``course_lib`` but ``recipes/`` (the chapters' recipes),
``widgets/`` (the notebooks' demos) and ``__main__`` (the command line, which dispatches to
the recipes): those may import the library, never the other way round.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "course_lib"
CHAPTER_PACKAGES = ("course_lib.recipes", "course_lib.widgets")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, ast.Module]:
    return {module_name(path, package): ast.parse(path.read_text(), str(path))
            for path in sorted(package.rglob("*.py"))}


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def imported_module(importer: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute name of the module a ``from ... import`` statement reads from."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, tree: ast.Module, is_package: bool):
    """``(source module, imported name, bound as, line)`` for each course_lib import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = imported_module(name, node, is_package)
            for alias in node.names:
                yield source, alias.name, alias.asname or alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, alias.asname or alias.name.split(".")[0], node.lineno


def private_definitions(tree: ast.Module) -> set[str]:
    """The private names a module defines: functions, classes, methods, attributes it sets."""
    defined = {node.name for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {target.attr for target in targets if isinstance(target, ast.Attribute)}
            defined |= {target.id for target in targets if isinstance(target, ast.Name)}
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", None)) in ("setattr", "__setattr__"):
            defined |= {arg.value for arg in node.args if isinstance(arg, ast.Constant)
                        and isinstance(arg.value, str)}
    return {name for name in defined if is_private(name)}


def private_uses(name: str, tree: ast.Module, is_package: bool, known: set[str],
                 elsewhere: set[str]) -> list[str]:
    """Where module ``name`` uses another course_lib module's private names: imported
    (``from .x import _y``), read from an imported module (``x._y``), or read from an object
    when the name is defined in another course_lib module and not in this one
    (``model._analysis(...)``; ``elsewhere``: the private names the others define)."""
    found, course_modules = [], set()
    for source, imported, bound, line in imports(name, tree, is_package):
        if not (source == "course_lib" or source.startswith("course_lib.")):
            continue
        if imported is not None and is_private(imported):
            found.append(f"{name}:{line} imports {imported} from {source}")
        if imported is None or f"{source}.{imported}" in known:
            course_modules.add(bound)
    own = private_definitions(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not is_private(node.attr):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in course_modules:
            found.append(f"{name}:{node.lineno} reads {owner.id}.{node.attr}")
        elif isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue  # the class's own members
        elif node.attr in elsewhere and node.attr not in own:
            found.append(f"{name}:{node.lineno} reads .{node.attr}, defined in another module")
    return found


def layout_problems(package: Path = PACKAGE) -> dict[str, list[str]]:
    """The three checks' findings for the package at ``package``."""
    trees = modules(package)
    known = set(trees)
    packages = {module_name(path, package) for path in package.rglob("__init__.py")}
    definitions = {name: private_definitions(tree) for name, tree in trees.items()}
    private, backward = [], []
    for name, tree in trees.items():
        elsewhere = set().union(*(names for other, names in definitions.items()
                                  if other != name))
        private += private_uses(name, tree, name in packages, known, elsewhere)
        if name.startswith(CHAPTER_PACKAGES) or name == "course_lib.__main__":
            continue
        for source, imported, _, line in imports(name, tree, name in packages):
            target = source if imported is None else f"{source}.{imported}"
            if target.startswith(CHAPTER_PACKAGES):
                backward.append(f"{name}:{line} imports {target}")
    return {"private": private, "backward": backward}


def readme_map(readme: str) -> set[str]:
    """The paths in the README's library map: the code block under "## The library", one
    ``name.py`` or ``folder/`` per line, two spaces of indentation per level under
    ``course_lib/``."""
    section = readme.split("## The library", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    paths, folders = set(), []
    for line in block.splitlines()[1:]:
        entry = line.strip().split(" ", 1)[0]
        if not entry.endswith((".py", "/")):
            continue  # a description that goes on
        depth = (len(line) - len(line.lstrip(" "))) // 2 - 1
        folders = folders[:depth]
        paths.add("/".join([*folders, entry.rstrip("/")]))
        if entry.endswith("/"):
            folders.append(entry.rstrip("/"))
    return paths


def package_paths(package: Path = PACKAGE) -> set[str]:
    found = set()
    for path in package.rglob("*.py"):
        relative = path.relative_to(package)
        folders = relative.parts[:-1]
        found |= {"/".join(folders[: depth + 1]) for depth in range(len(folders))}
        if path.name != "__init__.py":
            found.add(relative.as_posix())
    return found


def test_no_module_uses_another_modules_private_names():
    assert layout_problems()["private"] == []


def test_no_library_module_imports_a_recipe_or_a_widget():
    assert layout_problems()["backward"] == []


def test_the_readme_map_lists_every_module_and_only_those():
    mapped = readme_map((ROOT / "README.md").read_text())
    actual = package_paths()
    assert sorted(actual - mapped) == [], "modules missing from the README's library map"
    assert sorted(mapped - actual) == [], "the README's library map names missing modules"


# The checks can fail: each against a small package with one violation ----------------------

VIOLATIONS = {
    "private": {"a.py": "def _helper():\n    return 1\n",
                "b.py": "from .a import _helper\n\n_helper()\n"},
    "private module attribute": {"a.py": "def _helper():\n    return 1\n",
                                 "b.py": "from . import a\n\na._helper()\n"},
    "private method": {"a.py": "class Model:\n    def _gains(self):\n        return 1\n",
                       "b.py": "def demo(model):\n    return model._gains()\n"},
    "backward": {"a.py": "from .recipes import nb06\n",
                 "recipes/__init__.py": "", "recipes/nb06.py": "from .. import a\n"},
}


@pytest.mark.parametrize("kind", sorted(VIOLATIONS))
def test_each_check_catches_its_violation(tmp_path, kind):
    package = tmp_path / "course_lib"
    for path, text in {"__init__.py": "", **VIOLATIONS[kind]}.items():
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).write_text(text)
    problems = layout_problems(package)
    assert len(problems["backward" if kind == "backward" else "private"]) == 1, problems
    assert problems["private" if kind == "backward" else "backward"] == []


def test_the_map_check_sees_a_missing_and_an_extra_module(tmp_path):
    package = tmp_path / "course_lib"
    (package / "codecs").mkdir(parents=True)
    for path in ("__init__.py", "images.py", "codecs/__init__.py", "codecs/learned.py",
                 "codecs/new.py"):
        (package / path).write_text("")
    readme = ("## The library\n\n```\ncourse_lib/\n  images.py    load/save\n"
              "  codecs/      the files\n    learned.py the codec\n                 more\n"
              "  gone.py      removed\n```\n")
    mapped, actual = readme_map(readme), package_paths(package)
    assert actual - mapped == {"codecs/new.py"} and mapped - actual == {"gone.py"}
