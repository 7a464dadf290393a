"""`python -m course_lib bench` on a folder it has never seen: tiny images of odd sizes, a
greyscale PNG, a TIFF, a JPEG input, a broken file and a text file. Its numbers are checked
against independent measurements (Pillow's own files, skimage's PSNR, pytorch_msssim), the
cache against codec calls, and every problem a user can cause against its one-line report."""

import contextlib
import csv
import io
import json
import shutil

import numpy as np
import pytest
import pytorch_msssim
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from course_lib import __main__ as cli
from course_lib import bench, benchmark
from course_lib.codecs import classical, learned, lossless, mini_jpeg

FAST_CODECS = "jpeg,mini-jpeg,png,course-lossless"


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[:53, :37]
    odd = (np.stack([x * 6, y * 4, (x + y) * 3], -1)
           + rng.integers(0, 20, (53, 37, 3))).clip(0, 255).astype(np.uint8)
    y, x = np.mgrid[:176, :200]  # above 160 pixels on the shorter side: has an MS-SSIM
    large = (np.stack([np.sin(x / 9) * 100 + 120, np.cos(y / 7) * 90 + 120, (x + y) / 2], -1)
             + rng.normal(0, 6, (176, 200, 3))).clip(0, 255).astype(np.uint8)
    return {"odd.png": odd, "grey.png": odd[..., 1].copy(), "large.tif": large,
            "photo.jpg": large[:40, :50].copy()}


def _write_folder(folder, names=None):
    folder.mkdir()
    for name, pixels in _images().items():
        if names is None or name in names:
            options = {"quality": 90} if name.endswith(".jpg") else {}
            Image.fromarray(pixels).save(folder / name, **options)
    return folder


def _bench(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["bench", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


def _rows(out) -> list[dict]:
    with (out / "results.csv").open() as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run with the progress bar on, over a folder with a broken and a text file."""
    folder = _write_folder(tmp_path_factory.mktemp("bench") / "mine")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"cut short")
    (folder / "notes.txt").write_text("not an image")
    out = folder.parent / "results"
    code, stdout, stderr = _bench("--images", folder, "--out", out, "--codecs", FAST_CODECS)
    return {"code": code, "stdout": stdout, "stderr": stderr, "out": out, "folder": folder}


def _source(name: str, rgb: bool) -> np.ndarray:
    """The pixels as the benchmark reads them (the JPEG input decoded by Pillow)."""
    pixels = _images()[name]
    if name.endswith(".jpg"):
        pixels = np.array(Image.open(io.BytesIO(_pillow_bytes(pixels, "JPEG", quality=90))))
    if rgb and pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return pixels


def _pillow_bytes(pixels, file_format, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=file_format, **options)
    return buffer.getvalue()


def test_the_run_succeeds_and_reports_the_broken_file_once(run):
    assert run["code"] == 0, run["stderr"]
    skipped = [line for line in run["stderr"].splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 1 and "broken.png" in skipped[0]
    rows = _rows(run["out"])
    assert {row["image"] for row in rows} == {"odd.png", "grey.png", "large.tif", "photo.jpg"}
    assert len(rows) == 4 * (11 + 11 + 1 + 1)
    report = (run["out"] / "report.md").read_text()
    assert "broken.png" in report.split("Skipped")[1] and "Ignored" in report
    assert "notes.txt" in report


def test_jpeg_rows_match_pillow_and_skimage(run):
    for row in _rows(run["out"]):
        if row["codec"] != "jpeg":
            continue
        source = _source(row["image"], rgb=True)
        data = _pillow_bytes(source, "JPEG", quality=int(row["setting"]), subsampling=2,
                             optimize=True)
        assert int(row["bytes"]) == len(data), row
        height, width = source.shape[:2]
        assert float(row["bpp"]) == pytest.approx(8 * len(data) / (height * width))
        decoded = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
        assert float(row["psnr"]) == pytest.approx(
            peak_signal_noise_ratio(source, decoded, data_range=255), abs=1e-4)
        if row["image"] == "large.tif":
            x, y = (torch.from_numpy(a).permute(2, 0, 1)[None].double() / 255
                    for a in (source, decoded))
            reference = pytorch_msssim.ms_ssim(x, y, data_range=1.0).item()
            assert float(row["ms_ssim"]) == pytest.approx(reference, abs=1e-4)
        else:  # too small for five scales
            assert row["ms_ssim"] == ""
        assert row["error"] == "" and row["note"] == ("greyscale coded as RGB"
                                                      if row["image"] == "grey.png" else "")


def test_mini_jpeg_rows_are_the_course_codec_files(run):
    for row in _rows(run["out"]):
        if row["codec"] == "mini-jpeg" and row["setting"] in ("5", "50", "95"):
            source = _source(row["image"], rgb=True)
            data = mini_jpeg.encode(source, int(row["setting"]))
            assert int(row["bytes"]) == len(data)
            assert float(row["psnr"]) == pytest.approx(peak_signal_noise_ratio(
                source, mini_jpeg.decode(data), data_range=255), abs=1e-4)


def test_lossless_rows_are_exact_and_code_grey_as_grey(run):
    rows = [row for row in _rows(run["out"]) if row["lossless"] == "True"]
    assert {row["codec"] for row in rows} == {"png", "course-lossless"} and len(rows) == 8
    for row in rows:
        source = _source(row["image"], rgb=False)
        channels = 1 if source.ndim == 2 else 3
        assert row["exact"] == "True" and row["error"] == "" and row["setting"] == ""
        assert int(row["channels"]) == channels
        if row["codec"] == "png":
            data = _pillow_bytes(source, "PNG", optimize=True)
        else:
            data = lossless.compress_lossless(source)
            assert np.array_equal(lossless.decompress_lossless(data), source)
        assert int(row["bytes"]) == len(data)
        assert float(row["bpsp"]) == pytest.approx(8 * len(data) / source.size)


def test_outputs_report_and_plots(run):
    out = run["out"]
    report = (out / "report.md").read_text()
    for name in ("results.csv", "results.json", "rd_psnr.png", "rd_ms_ssim.png", "curves.csv",
                 "bd_rate_vs_jpeg.csv", "bd_rate_matrix_psnr.csv", "bd_rate_matrix_ms_ssim.csv",
                 "lossless.csv", "times.csv"):
        assert (out / name).is_file() and f"({name})" in report, name
    for plot in ("rd_psnr.png", "rd_ms_ssim.png"):
        with Image.open(out / plot) as image:
            assert image.info["dpi"][0] >= 100 and image.width >= 600
    for fragment in ("optimize=True", "CPUs", "torch", "## Lossless codecs",
                     "BD-rate against JPEG", "## Time per image"):
        assert fragment in report, fragment
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == len(_rows(out)) and {"bytes", "bpp", "psnr", "ms_ssim", "encode_s",
                                             "decode_s"} <= set(rows[0])
    assert all(row["encode_s"] > 0 and row["decode_s"] > 0 for row in rows)


def test_bd_rate_is_bench_on_the_mean_curves(run):
    rows = _rows(run["out"])
    curves = {}
    for codec in ("jpeg", "mini-jpeg"):
        points = {}
        for row in rows:
            if row["codec"] == codec:
                points.setdefault(int(row["setting"]), []).append(
                    (float(row["bpp"]), float(row["psnr"])))
        assert all(len(cell) == 4 for cell in points.values())  # every image, every setting
        curves[codec] = ([np.mean([p[0] for p in points[s]]) for s in sorted(points)],
                         [np.mean([p[1] for p in points[s]]) for s in sorted(points)])
    expected = bench.bd_rate(*curves["jpeg"], *curves["mini-jpeg"])
    with (run["out"] / "bd_rate_vs_jpeg.csv").open() as stream:
        (line,) = list(csv.DictReader(stream))
    assert line["codec"] == "mini-jpeg"
    assert float(line["bd_rate_psnr_percent"]) == pytest.approx(expected, abs=1e-9)


def _count_calls(monkeypatch):
    calls = []
    original = benchmark.measure

    def measure(codec, image, setting):
        if image.name != "warm-up":
            calls.append((codec.name, image.name, setting))
        return original(codec, image, setting)

    monkeypatch.setattr(benchmark, "measure", measure)
    return calls


def test_a_rerun_codes_nothing_and_one_more_codec_codes_only_that(run, tmp_path,
                                                                 monkeypatch):
    out = tmp_path / "results"
    shutil.copytree(run["out"], out)

    def refuse(*args, **kwargs):
        raise AssertionError("a codec was called")

    for module, name in ((classical, "encode"), (classical, "decode"), (mini_jpeg, "encode"),
                         (lossless, "compress_lossless"), (benchmark, "measure")):
        monkeypatch.setattr(module, name, refuse)
    code, stdout, stderr = _bench("--images", run["folder"], "--out", out, "--codecs",
                                  FAST_CODECS, "--no-progress")
    assert code == 0, stderr
    assert "(0 new)" in stdout
    before, after = _rows(run["out"]), _rows(out)
    assert all(row["cached"] == "True" for row in after)
    assert ([{k: v for k, v in row.items() if k != "cached"} for row in before]
            == [{k: v for k, v in row.items() if k != "cached"} for row in after])

    monkeypatch.undo()
    calls = _count_calls(monkeypatch)
    code, _, stderr = _bench("--images", run["folder"], "--out", out, "--codecs",
                             FAST_CODECS + ",jpeg444", "--no-progress")
    assert code == 0, stderr
    assert len(calls) == 4 * 11 and {call[0] for call in calls} == {"jpeg444"}


def test_an_interrupted_run_resumes(tmp_path, monkeypatch):
    folder = _write_folder(tmp_path / "mine", names=("odd.png", "grey.png"))
    out = tmp_path / "results"
    original = benchmark.measure
    done = []

    def interrupted(codec, image, setting):
        if len(done) == 5:
            raise KeyboardInterrupt
        done.append(image.name)
        return original(codec, image, setting)

    monkeypatch.setattr(benchmark, "measure", interrupted)
    code, _, stderr = _bench("--images", folder, "--out", out, "--codecs", "jpeg",
                             "--no-progress")
    assert code == 130 and "interrupted" in stderr and "resumes" in stderr
    assert len(list((out / "cache").glob("*.json"))) == 4  # 5 measured, one the warm-up
    monkeypatch.undo()
    calls = _count_calls(monkeypatch)
    code, _, stderr = _bench("--images", folder, "--out", out, "--codecs", "jpeg",
                             "--no-progress")
    assert code == 0, stderr
    assert len(calls) == 2 * 11 - 4 and len(_rows(out)) == 2 * 11


def test_learned_codec_rows(tmp_path):
    folder = _write_folder(tmp_path / "mine", names=("odd.png",))
    code, _, stderr = _bench("--images", folder, "--out", tmp_path / "out", "--codecs",
                             "learned", "--no-progress")
    assert code == 0, stderr
    rows = _rows(tmp_path / "out")
    assert [row["setting"] for row in rows] == ["0", "1", "2", "3"]
    source = _images()["odd.png"]
    for row in rows[::3]:
        data = learned.compress_image(source, int(row["setting"]))
        assert int(row["bytes"]) == len(data)
        assert float(row["psnr"]) == pytest.approx(peak_signal_noise_ratio(
            source, learned.decompress_image(data), data_range=255), abs=1e-4)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "JPEG was not run" in report and "rate settings 0, 1, 2, 3" in report


def test_the_course_codecs_of_notebooks_08_and_09_are_benchmarked_as_their_modules_code(
        tmp_path):
    from course_lib import cnn_jpeg
    from course_lib.codecs import lossless_learned

    folder = _write_folder(tmp_path / "mine", names=("odd.png",))
    code, _, stderr = _bench("--images", folder, "--out", tmp_path / "out", "--codecs",
                             "jpeg,jpeg-filter,learned-lossless", "--no-progress")
    assert code == 0, stderr
    rows = _rows(tmp_path / "out")
    source = _images()["odd.png"]
    plain = {row["setting"]: row for row in rows if row["codec"] == "jpeg"}
    filtered = [row for row in rows if row["codec"] == "jpeg-filter"]
    assert [row["setting"] for row in filtered] == list(plain)
    for row in filtered[::5]:
        assert row["bytes"] == plain[row["setting"]]["bytes"]  # the same JPEG file
        data = classical.encode(source, "jpeg", int(row["setting"]))
        assert float(row["psnr"]) == pytest.approx(peak_signal_noise_ratio(
            source, cnn_jpeg.decode_filtered(data), data_range=255), abs=1e-4)
    (row,) = [row for row in rows if row["codec"] == "learned-lossless"]
    assert row["exact"] == "True"
    assert int(row["bytes"]) == len(lossless_learned.compress_learned(source))


def test_a_lossless_mismatch_is_an_error_not_a_result(tmp_path, monkeypatch):
    folder = _write_folder(tmp_path / "mine", names=("odd.png",))
    original = lossless.decompress_lossless

    def off_by_one(data):
        image = original(data).copy()
        image[0, 0] ^= 1
        return image

    monkeypatch.setattr(lossless, "decompress_lossless", off_by_one)
    code, _, stderr = _bench("--images", folder, "--out", tmp_path / "out", "--codecs",
                             "png,course-lossless", "--no-progress")
    assert code == 1
    (row,) = [row for row in _rows(tmp_path / "out") if row["codec"] == "course-lossless"]
    assert row["exact"] == "False" and "not lossless" in row["error"]
    assert "1 pixels differ" in row["error"] and "not lossless" in stderr
    lossless_table = (tmp_path / "out" / "lossless.csv").read_text()
    assert "course-lossless,n/a" in lossless_table  # no mean from a failed codec
    assert "## Errors" in (tmp_path / "out" / "report.md").read_text()


def test_a_codec_that_is_not_installed_is_left_out_once(tmp_path, monkeypatch):
    folder = _write_folder(tmp_path / "mine", names=("odd.png", "grey.png"))

    def no_plugin():
        raise ImportError("JPEG XL needs the pillow-jxl-plugin package")

    monkeypatch.setattr(classical, "register_jpeg_xl", no_plugin)
    code, _, stderr = _bench("--images", folder, "--out", tmp_path / "out", "--codecs",
                             "png,jxl-lossless", "--no-progress")
    assert code == 0, stderr
    notes = [line for line in stderr.splitlines() if "jxl-lossless" in line]
    assert len(notes) == 1 and notes[0].startswith("note: codec jxl-lossless left out")
    assert {row["codec"] for row in _rows(tmp_path / "out")} == {"png"}
    assert "Left out: **jxl-lossless**" in (tmp_path / "out" / "report.md").read_text()


def test_unknown_codec_is_one_error_line_with_the_list(tmp_path):
    folder = _write_folder(tmp_path / "mine", names=("odd.png",))
    code, _, stderr = _bench("--images", folder, "--out", tmp_path / "out", "--codecs",
                             "jpeg,jpg-xl")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert stderr.startswith("error: unknown codec 'jpg-xl'")
    for name in ("learned", "learned-e2", "mini-jpeg", "webp-lossless", "course-lossless"):
        assert name in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ["empty", "only-bad", "missing"])
def test_folders_without_images_are_one_error_line(tmp_path, content):
    folder = tmp_path / "mine"
    if content != "missing":
        folder.mkdir()
    if content == "only-bad":
        (folder / "notes.txt").write_text("text")
        (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    code, _, stderr = _bench("--images", folder, "--out", tmp_path / "out", "--codecs", "jpeg",
                             "--no-progress")
    assert code == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert {"empty": "no image files", "only-bad": "could be read",
            "missing": "no folder"}[content] in errors[0]


def test_help_lists_the_codecs_and_the_command_list_has_bench(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--images" in text and "learned-e1" in text and "opt-in" in text
    assert "python -m course_lib bench" in cli.USAGE


def test_results_cannot_go_into_the_images_folder(tmp_path):
    folder = _write_folder(tmp_path / "mine", names=("odd.png",))
    code, _, stderr = _bench("--images", folder, "--out", folder, "--codecs", "png",
                             "--no-progress")
    assert code == 2 and stderr.startswith("error: --out is the images folder")
    assert sorted(path.name for path in folder.iterdir()) == ["odd.png"]
