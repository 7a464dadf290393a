"""The conda environment (Binder) and pyproject.toml (pip, `make`) must not drift apart, and
pyproject.toml declares every package that course_lib and the tests import."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_names_the_same_runtime_packages_as_pyproject():
    pyproject = _pyproject()
    pip_names = {_name(req) for req in pyproject["project"]["dependencies"]}
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_names = set()
    for item in environment["dependencies"]:
        if isinstance(item, dict):
            conda_names |= {_name(req) for req in item["pip"]}
        elif _name(item) not in ("python", "pip"):
            conda_names.add(CONDA_TO_PIP.get(_name(item), _name(item)))
    assert conda_names == pip_names
    assert "conda-forge" in environment["channels"]


def test_environment_yml_python_meets_requires_python():
    floor = _pyproject()["project"]["requires-python"].removeprefix(">=")
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(item for item in environment["dependencies"]
                  if isinstance(item, str) and _name(item) == "python")
    pinned = python.split("=", 1)[1]
    assert tuple(map(int, pinned.split("."))) >= tuple(map(int, floor.split(".")))
    assert sys.version_info >= tuple(map(int, floor.split(".")))


def _third_party_imports(folder: Path) -> dict[str, str]:
    """Top-level modules imported by the .py files under ``folder`` that are neither the
    standard library, course_lib, nor the folder's own modules: {module: a file using it}."""
    local = {path.stem for path in folder.glob("*.py")} | {"course_lib"}
    found = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _declared(requirements) -> set[str]:
    return {_canonical(_name(requirement)) for requirement in requirements}


def _undeclared(folder: Path, declared: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module, path in _third_party_imports(folder).items():
        names = {_canonical(name) for name in distributions.get(module, [module])}
        if not names & declared:
            missing.append(f"{module} (distribution {sorted(names)}, imported by {path})")
    return missing


def test_every_import_of_course_lib_is_a_runtime_dependency():
    runtime = _declared(_pyproject()["project"]["dependencies"])
    assert _undeclared(ROOT / "course_lib", runtime) == []


def test_every_import_of_the_tests_is_declared_for_development():
    pyproject = _pyproject()
    referees = [line.split("#")[0].strip() for line in
                (ROOT / "requirements-referees.txt").read_text().splitlines()]
    declared = _declared(pyproject["project"]["dependencies"]
                         + pyproject["project"]["optional-dependencies"]["dev"]
                         + [line for line in referees if line])
    assert _undeclared(ROOT / "tests", declared) == []
    # the referees the tests import plainly (no importorskip: a missing one fails)
    assert {"compressai", "pywavelets", "pytorch-msssim", "pyyaml"} <= declared


def test_binder_post_build_installs_course_lib():
    post_build = (ROOT / "postBuild").read_text()
    assert "pip install" in post_build and " -e ." in post_build


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
