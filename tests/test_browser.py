"""The widget demos, proven in a real browser: JupyterLab and `make present` (Voilà) in headless
Chromium, driven by Playwright. Each test changes one control the way a student would (a key
on a slider, a number or a message typed in) and checks that the live figure is redrawn.

Screenshots of each demo before and after the change go to build/browser-screenshots/.
Needs /usr/bin/chromium (Debian's `chromium`) and the dev extra (playwright, voila): without
them the tests are skipped, except in CI (CI set), where they fail.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from jupyter_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    SCREENSHOTS,
    Server,
    free_port,
    missing_browser_parts,
    root_flag,
    server_environment,
    strip_outputs,
)

CELL_TIMEOUT_MS = 180_000     # one cell on a busy 2-core machine, torch import included
VOILA_TIMEOUT_MS = 300_000    # Voilà runs the whole notebook before it shows the page
REDRAW_TIMEOUT_MS = 60_000    # one redraw after a control changes


@pytest.fixture(scope="module")
def browser():
    missing = missing_browser_parts()
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run them (.ci/run installs chromium)")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                              timeout=60_000)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def lab_server(browser, tmp_path_factory):
    """JupyterLab on a copy of notebooks/ (runs never touch the committed files)."""
    home = tmp_path_factory.mktemp("jupyterlab")
    shutil.copytree(ROOT / "notebooks", home / "root" / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port, token = free_port(), secrets.token_hex(16)
    server = Server([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
                     f"--port={port}", "--ServerApp.port_retries=0",
                     f"--IdentityProvider.token={token}",
                     f"--ServerApp.root_dir={home / 'root'}", *root_flag()],
                    env=server_environment(home), log=home / "jupyterlab.log")
    try:
        server.wait_until_listening(port)
        yield LabServer(f"http://127.0.0.1:{port}", token, home / "root", server)
    finally:
        server.stop()


@pytest.fixture
def lab(lab_server):
    """The JupyterLab server; each test's kernel (about 1 GB) is shut down after it."""
    yield lab_server
    lab_server.shut_down_kernels()


@dataclass
class LabServer:
    url: str
    token: str
    root: Path
    server: Server

    def shut_down_kernels(self):
        for session in self._api("GET", "sessions"):
            self._api("DELETE", f"sessions/{session['id']}")

    def _api(self, method: str, path: str):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None


# -- the controls, used the way a student uses them ------------------------------------------

def press_on_slider(label: str, key: str):
    """Focus the handle of the slider called ``label`` and press ``key`` (e.g. End)."""
    def change(panel):
        slider = panel.locator(".widget-slider").filter(has_text=label)
        readout = slider.locator(".widget-readout")
        before = readout.inner_text()
        slider.locator(".noUi-handle").press(key)
        _expect(readout).not_to_have_text(before)
        return f"{label} {before} -> {readout.inner_text()} ({key} on the slider)"
    return change


def type_into(text: str, label: str | None = None, nth: int = 0):
    """Type ``text`` into the ``nth`` text or number box (called ``label``) and press Enter."""
    def change(panel):
        boxes = panel.locator(".widget-text")
        if label:
            boxes = boxes.filter(has_text=label)
        box = boxes.nth(nth).locator("input")
        before = box.input_value()
        box.fill(text)
        box.press("Enter")
        return f"box {label or nth}: {before!r} -> {text!r} (typed)"
    return change


@dataclass(frozen=True)
class Demo:
    notebook: str                          # file name in notebooks/
    needs: tuple[str, ...]                 # text of the cells the demo depends on (setup aside)
    widget: str                            # text of the cell that builds the demo
    change: Callable                       # what the student does to one control


DEMOS = [
    Demo("00_images_bits_and_codecs.ipynb", ("parrots = datasets.load_kodak(",),
         "codec_widgets.quality_explorer(", press_on_slider("quality", "End")),
    # the centre weight of the 3x3 kernel (5 in the sharpen preset)
    Demo("01_convolution.ipynb", ("photo = datasets.load_kodak(",),
         "conv_widgets.kernel_editor(", type_into("9", nth=4)),
    Demo("04_entropy_coding.ipynb", (), "entropy_widgets.coder_explorer(",
         type_into("TTHTTTHTTT", label="message")),
]


# -- JupyterLab ------------------------------------------------------------------------------

@pytest.mark.parametrize("demo", DEMOS, ids=[demo.notebook[:2] for demo in DEMOS])
def test_widget_demo_redraws_in_jupyterlab(lab, page, demo):
    notebook = strip_outputs(lab.root / "notebooks" / demo.notebook)
    sources = ["".join(cell["source"]) for cell in notebook["cells"]]
    to_run = [_setup_cell(notebook)] + [_cell_with(sources, text, demo.notebook)
                                        for text in (*demo.needs, demo.widget)]

    # a workspace of its own: JupyterLab would otherwise reopen the notebooks of earlier tests
    workspace = f"test-{Path(demo.notebook).stem}"
    page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/notebooks/{demo.notebook}"
              f"?token={lab.token}", timeout=120_000)
    cells = page.locator(".jp-Notebook .jp-Cell")
    _expect(cells).to_have_count(len(sources), timeout=120_000)
    _expect(page.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=120_000)
    for index in to_run:
        _run_cell(cells.nth(index), f"{demo.notebook} cell {index}", lab.server)

    widget_cell = cells.nth(to_run[-1])
    panel = widget_cell.locator(".widget-vbox").first
    _check_redraw(panel, demo.change, f"lab-{Path(demo.notebook).stem}")


def _setup_cell(notebook: dict) -> int:
    return next(i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code")


def _cell_with(sources: list[str], text: str, name: str) -> int:
    matches = [i for i, source in enumerate(sources) if text in source]
    assert matches, f"{name} has no cell containing {text!r}: update DEMOS in {__file__}"
    return matches[0]


def _run_cell(cell, name: str, server: Server):
    """Click into the cell's editor and press Ctrl+Enter; wait for its execution count."""
    prompt = cell.locator(".jp-InputPrompt")
    for _ in range(3):
        cell.locator(".cm-content").click()
        _expect(cell).to_have_class(re.compile(r"\bjp-mod-active\b"))
        cell.page.keyboard.press("Control+Enter")
        try:  # "[*]" when queued or running, "[n]" when done; "[ ]" if the key went astray
            _expect(prompt).not_to_have_text(re.compile(r"\[ \]"), timeout=10_000)
            break
        except AssertionError:
            continue  # a key pressed while JupyterLab still moves the focus is lost: again
    else:
        raise AssertionError(f"{name}: Ctrl+Enter did not start the cell in three tries")
    try:
        _expect(prompt).to_have_text(re.compile(r"\[\d+\]"), timeout=CELL_TIMEOUT_MS)
    except AssertionError as error:
        raise AssertionError(f"{name} did not finish:\n{cell.inner_text()[-3000:]}\n"
                             f"server log:\n{server.log_tail()}") from error
    error_output = cell.locator(".jp-OutputArea-output[data-mime-type="
                                "'application/vnd.jupyter.stderr']").filter(has_text="Error")
    assert error_output.count() == 0, f"{name} failed:\n{error_output.first.inner_text()}"


# -- Voilà, through `make present` -------------------------------------------------------------

def test_make_present_serves_notebook_00_with_working_widgets(browser, page, tmp_path):
    port = free_port()
    flags = f"--no-browser --port={port} --Voila.ip=127.0.0.1 --show_tracebacks=True"
    # -o: use the environment as it is (make test has just installed it), never reinstall here
    env = server_environment(tmp_path)
    for variable in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # set when `make test` runs us
        env.pop(variable, None)
    server = Server(["make", "--no-print-directory", "-o", ".venv/.installed", "present",
                     "NB=00", f"BIN={Path(sys.executable).parent}", f"VOILA_FLAGS={flags}"],
                    env=env, log=tmp_path / "voila.log")
    try:
        server.wait_until_listening(port)
        page.goto(f"http://127.0.0.1:{port}/", wait_until="commit")
        panel = page.locator(".widget-vbox").filter(has=page.locator(".widget-slider")).first
        try:
            _expect(panel.locator(".widget-slider").first).to_be_visible(
                timeout=VOILA_TIMEOUT_MS)
        except AssertionError as error:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / "voila-00_images_bits_and_codecs-failed.png")
            raise AssertionError(f"Voilà showed no widget; the page ends with:\n"
                                 f"{page.inner_text('body')[-3000:]}\n"
                                 f"server log:\n{server.log_tail()}") from error
        _check_redraw(panel, press_on_slider("quality", "End"), "voila-00_images_bits_and_codecs")
    finally:
        server.stop()


def test_make_present_names_the_notebooks_when_nb_matches_none():
    result = subprocess.run(["make", "--no-print-directory", "present", "NB=99"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "NB=99 names no notebook" in result.stderr
    assert "00_images_bits_and_codecs.ipynb" in result.stderr


# -- shared ------------------------------------------------------------------------------------

def _check_redraw(panel, change: Callable, name: str):
    """Change one control of the demo in ``panel``: its live area, empty until then (the
    default state is the static figure above it), must draw a figure."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert panel.locator(".widget-output img").count() == 0, f"{name}: drawn before a change"
    panel.screenshot(path=SCREENSHOTS / f"{name}-before.png")
    what = change(panel)
    after = _wait_for_figure(panel, other_than="", timeout=CELL_TIMEOUT_MS)
    panel.screenshot(path=SCREENSHOTS / f"{name}-after.png")
    assert _png(after), f"{name}: no figure after {what}"


def _wait_for_figure(panel, other_than: str, timeout: int) -> str:
    """The src of the figure in the demo's output once one other than ``other_than`` is drawn."""
    panel.page.wait_for_function(
        """([panel, previous]) => {
            const image = panel.querySelector('.widget-output img');
            return image !== null && image.src !== previous && image.complete
                && image.naturalWidth > 0;
        }""", arg=[panel.element_handle(), other_than], timeout=timeout)
    return panel.locator(".widget-output img").first.get_attribute("src")


def _png(src: str | None) -> bytes:
    prefix = "data:image/png;base64,"
    assert src and src.startswith(prefix), f"expected a PNG figure, got {str(src)[:80]!r}"
    data = base64.b64decode(src[len(prefix):])
    assert data.startswith(b"\x89PNG"), "the figure is not a PNG"
    return data


def _expect(locator):
    from playwright.sync_api import expect

    return expect(locator)
