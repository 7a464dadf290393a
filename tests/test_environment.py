"""The conda environment (Binder) and pyproject.toml (pip, `make`) must not drift apart."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_names_the_same_runtime_packages_as_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
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


def test_binder_post_build_installs_course_lib():
    post_build = (ROOT / "postBuild").read_text()
    assert "pip install" in post_build and " -e ." in post_build


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
