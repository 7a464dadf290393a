"""Shared fixtures. Dataset tests need the Kodak images: from the internet, or from the offline
mirror named by COURSE_DATA_MIRROR (CI sets it)."""

import hashlib
import http.server
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib import datasets, weights


@pytest.fixture(scope="session")
def kodak_image():
    """Kodak image 1 (512x768 RGB uint8), fetched and checksum-verified."""
    return datasets.load_kodak(1)


@pytest.fixture(scope="session")
def kodak_jpeg_pair(kodak_image):
    """(original, JPEG q=30 decoded) as uint8 arrays: a realistic distorted pair."""
    buffer = io.BytesIO()
    Image.fromarray(kodak_image).save(buffer, format="JPEG", quality=30)
    decoded = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return kodak_image, decoded


@pytest.fixture
def shown_titles(monkeypatch):
    """What the course's widgets display: each time one calls ``plt.show()``, the titles of
    the figure's axes are appended (a list of strings per figure) and the figure is closed.
    A test moves a control and reads the numbers the new figure shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = []

    def show(*args, **kwargs):
        shown.append([axis.get_title() for axis in plt.gcf().axes])
        plt.close("all")

    monkeypatch.setattr(plt, "show", show)
    return shown


@pytest.fixture
def strict_from_numpy(monkeypatch):
    """``torch.from_numpy`` refuses a read-only array. Torch itself only warns, once per
    process, so a second offender in the same run would go unnoticed by a warning filter."""
    original = torch.from_numpy

    def checked(array):
        if not array.flags.writeable:
            raise AssertionError("torch.from_numpy of a read-only array (torch warns: writing "
                                 "to the tensor is undefined behaviour)")
        return original(array)

    monkeypatch.setattr(torch, "from_numpy", checked)


@pytest.fixture
def ship_weights(tmp_path, monkeypatch):
    """Point course_lib at shipped weights of the test's own: ``ship_weights(name, data)`` puts
    ``data`` at ``name`` (as in weights/, e.g. ``"codec/mean-scale-vr.pt"``) in a mirror folder
    named by COURSE_WEIGHTS_MIRROR and lists its sha256 in the manifest course_lib then reads."""
    mirror, manifest = tmp_path / "weights-mirror", tmp_path / "weights.txt"
    mirror.mkdir()
    manifest.write_text("")
    monkeypatch.setenv(weights.MIRROR_VARIABLE, str(mirror))
    monkeypatch.setattr(weights, "MANIFEST", manifest)

    def ship(name: str, data: bytes):
        (mirror / name).parent.mkdir(parents=True, exist_ok=True)
        (mirror / name).write_bytes(data)
        with manifest.open("a") as out:
            out.write(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
        return mirror / name

    return ship


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files from ``self.server.files`` with HTTP range support."""

    def do_GET(self):  # noqa: N802 (http.server API)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.server.range_requests.append(start)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1: ``server.files[url_path] = bytes`` publishes a file."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    httpd.files, httpd.range_requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
