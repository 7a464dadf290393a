"""course_lib away from this checkout: the wheel that `pip install git+…` builds, Colab's setup
cell, and Binder's postBuild, each in a fresh virtual environment that sees this one's
third-party packages (torch, …) but not its editable course_lib.

Offline: the course repository is a local git copy of this working tree, pip uses no index,
and datasets and weights come from local folders. The environments' home folder is a temporary
one, so pip, IPython and matplotlib write nothing into the user's.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from course_lib import repository, weights
from course_lib.codecs import learned

ROOT = Path(__file__).resolve().parent.parent
TEST_REPO = repository.Repository("course-test/course", "main")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("install")
    (work / "elsewhere").mkdir()  # the working folder of every check: not the checkout
    return work


@pytest.fixture(scope="module")
def source(work) -> Path:
    """This working tree as it would be committed (tracked and new files, not ignored ones) in
    a git repository of its own, on branch main."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True,
                            text=True).stdout
    tree = work / "course"
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():  # not a file deleted in the working tree
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    git = ["git", "-c", "user.name=course", "-c", "user.email=course@localhost",
           "-c", "commit.gpgsign=false"]
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run(git + command, cwd=tree, check=True)
    return tree


@pytest.fixture(scope="module")
def env(work):
    """Environment variables of the checks: offline pip, a temporary home folder."""
    (work / "home").mkdir()
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "COURSE_DATA_DIR",
               weights.MIRROR_VARIABLE)
    result = {key: value for key, value in os.environ.items()
              if key not in dropped and not key.startswith("PIP_")}
    result.update(HOME=str(work / "home"), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return result


@pytest.fixture(scope="module")
def fresh_python(work):
    """``fresh_python(name)``: the interpreter of a new virtual environment whose packages are
    this one's minus course_lib (a plain folder line in a .pth file: the .pth files there, such
    as this environment's editable course_lib hook, are not run)."""
    third_party = work / "third-party"
    third_party.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("course_lib", "__editable__")) and entry.suffix != ".pth":
            (third_party / entry.name).symlink_to(entry)

    def make(name: str) -> Path:
        venv.create(work / name, with_pip=False)
        python = work / name / "bin" / "python"
        purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       {}, work).strip()
        Path(purelib, "third_party.pth").write_text(f"{third_party}\n")
        return python

    return make


def _run(command, env: dict, cwd: Path) -> str:
    """Run ``command`` and return its output; fail the test with that output if it fails."""
    done = subprocess.run([str(part) for part in command], env=env or None, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        pytest.fail(f"{' '.join(map(str, command))} exited with {done.returncode}:\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


WHEEL_CHECK = """
import sys
from pathlib import Path
import course_lib
from course_lib import datasets, images, metrics, weights
from course_lib.codecs import learned
assert Path(course_lib.__file__).is_relative_to(sys.prefix), course_lib.__file__
assert not weights.CHECKOUT.exists(), weights.CHECKOUT
image = images.center_crop(datasets.load_kodak(1), 128)
decoded = learned.decompress_image(learned.compress_image(image, 1.0))
print(float(metrics.psnr(images.to_tensor(image), images.to_tensor(decoded))))
"""


def test_wheel_loads_kodak_and_the_shipped_codec_outside_the_checkout(source, work, env,
                                                                       fresh_python):
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--wheel-dir", work / "dist", source], env, work)
    python = fresh_python("wheel-env")
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps",
          *(work / "dist").glob("course_lib-*.whl")], env, work)
    psnr = _run([python, "-c", WHEEL_CHECK],
                env | {weights.MIRROR_VARIABLE: str(ROOT / "weights")}, work / "elsewhere")
    assert float(psnr) > 25


COLAB_KERNEL = """
import sys
import google.colab  # imported by Colab's kernel: what the setup cell looks for
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_cell(open(sys.argv[1]).read()).raise_error()
shell.run_cell("print(course_lib.__file__, learned.load_shipped().name)").raise_error()
"""


def test_colab_setup_cell_installs_course_lib_from_the_repository(source, work, env,
                                                                   fresh_python):
    python = fresh_python("colab-env")
    stub = work / "stub" / "google" / "colab"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    notebook = ROOT / "notebooks" / "07_full_codec.ipynb"
    cells = json.loads(repository.notebook_with(notebook.read_text(), notebook.name,
                                                TEST_REPO))["cells"]
    setup = "".join(next(cell for cell in cells if cell["cell_type"] == "code")["source"])
    assert repository.install_requirement(TEST_REPO) in setup
    (work / "setup_cell.py").write_text(setup)
    colab = env | {
        "PYTHONPATH": str(work / "stub"),
        # git fetches the test repository's GitHub address from the local copy instead
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"url.{source.as_uri()}.insteadOf",
        "GIT_CONFIG_VALUE_0": f"https://github.com/{TEST_REPO.name}",
        "PIP_NO_BUILD_ISOLATION": "0",  # sic: pip reads it as --no-build-isolation (no PyPI)
        weights.MIRROR_VARIABLE: str(ROOT / "weights"),
    }
    output = _run([python, "-c", COLAB_KERNEL, work / "setup_cell.py"], colab,
                  work / "elsewhere")
    installed, model = output.splitlines()[-1].split()
    assert Path(installed).is_relative_to(work / "colab-env") and model == learned.DEFAULT_MODEL


def test_binder_post_build_installs_the_checkout(source, work, env, fresh_python):
    python = fresh_python("binder-env")
    _run(["bash", "postBuild"], env | {"PATH": f"{python.parent}{os.pathsep}{env['PATH']}",
                                       "PIP_NO_BUILD_ISOLATION": "0"}, source)
    output = _run([python, "-c", "import course_lib; from course_lib.codecs import learned; "
                   "print(course_lib.__file__, learned.load_shipped().name)"],
                  env, work / "elsewhere")
    # an editable install of the checkout: its own weights/ folder, no download
    assert output.split() == [str(source / "course_lib" / "__init__.py"), learned.DEFAULT_MODEL]
