"""Helpers for tests/test_browser.py: Jupyter servers on a free loopback port, stopped for sure.

Every wait here has a deadline, so a server that never comes up fails the test with its log
instead of hanging it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "build" / "browser-screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# JupyterLab user settings for a test run: every cell in the DOM (no windowing, so cells can be
# found by position) and no news or update checks (nothing leaves the machine).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                     "checkForUpdates": False},
}


def missing_browser_parts() -> list[str]:
    """What the browser tests lack on this machine, with how to install it."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Python package playwright (pip install -e '.[dev]')")
    if shutil.which("voila", path=str(Path(sys.executable).parent)) is None:
        missing.append("the Python package voila (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    return missing


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_environment(home: Path) -> dict[str, str]:
    """The environment for a Jupyter server and its kernels in a test.

    Fast mode and the data mirror come through; MPLBACKEND does not (``make test`` sets it to
    Agg, which would leave every figure undrawn); Jupyter's config, settings, workspaces and
    runtime files live under ``home`` so the user's own never change a run.
    """
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    env["COURSE_FAST"] = "1"
    settings = home / "lab-settings"
    for plugin, values in LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env.update(JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"))
    return env


def root_flag() -> list[str]:
    """Jupyter refuses to run as root (containers, CI) unless told to."""
    return ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


class Server:
    """A server process in its own process group, its output in ``log``."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT):
        self.log = log
        with open(log, "wb") as sink:
            self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_until_listening(self, port: int, timeout: float = 90.0) -> None:
        """Wait until the server accepts connections on ``port``, or fail with its log.

        A connection, not a request: Voilà would run the notebook to answer one.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the group (Jupyter then shuts its kernels down), SIGKILL after ``grace``.

        Kernels run in sessions of their own; one left behind by a SIGKILL exits by itself
        within a second or two, when it sees its parent gone.
        """
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def strip_outputs(notebook: Path) -> dict:
    """Clear a notebook's outputs and saved widget state in place; return the notebook.

    A fresh run then shows only what this test's kernel produced.
    """
    content = json.loads(notebook.read_text())
    for cell in content["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    content.get("metadata", {}).pop("widgets", None)
    notebook.write_text(json.dumps(content, indent=1))
    return content
