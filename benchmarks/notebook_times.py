"""Wall time of every course notebook, in full and in fast mode, with its slowest cells.

    python benchmarks/notebook_times.py [--mode fast|full|both] [--notebooks 00 03 ...]
                                        [--slowest 5] [--timeout 900] [--keep DIR]
                                        [--output FILE]

Each notebook runs top to bottom in a fresh kernel (nbclient, as nbconvert does), from
``notebooks/`` as its working directory, with ``COURSE_FAST=1`` (fast mode, what CI runs) or
``COURSE_FAST=0`` (full mode, what the committed outputs come from) and
``COURSE_CHECK_STRICT=1``. Other variables pass through: set ``COURSE_DATA_MIRROR`` for an
offline copy of the datasets, ``OMP_NUM_THREADS`` to bound the threads (the committed
numbers used ``OMP_NUM_THREADS=1``), and leave ``MPLBACKEND`` unset to time the figures as a
reader gets them (``make test`` sets ``Agg``, which draws none). The notebooks are not
modified; ``--keep DIR`` saves the executed copies there.

The report gives, per notebook, the wall time (kernel start included) and the ``--slowest``
cells by the kernel's own timestamps (cell numbers count every cell from 0, markdown
included, as ``nb["cells"]`` does). A run of one mode replaces that mode's section of the
output file and keeps the other's; with ``--notebooks`` that section then lists only those, so
give such a run an ``--output`` of its own. A notebook that fails is reported with the failing
cell, and the others still run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

from course_lib.bench import cpu_name

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
RESULTS = Path(__file__).parent / "results" / "notebook_times.txt"
MODES = {"fast": "1", "full": "0"}
SECTION = re.compile(r"^## mode: (\w+)", re.MULTILINE)
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in a kernel's traceback


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "notebooks", "course_lib"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty.strip() else "")


class SlicedPollClient(NotebookClient):
    """A NotebookClient that waits for each execute reply in slices of one second.

    With ipykernel 7.4 and pyzmq 27 a reply the kernel has already sent can go unnoticed until
    the poll that waits for it times out: after a widget cell the kernel sat idle for the whole
    cell timeout (900 s) before the next cell ran, with no error. A fresh poll every second
    finds such a reply at once; a cell still times out after ``timeout`` seconds.
    """

    async def async_start_new_kernel_client(self):
        client = await super().async_start_new_kernel_client()
        get_msg = client.shell_channel.get_msg

        async def get_msg_in_slices(timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = 1.0 if deadline is None else deadline - time.monotonic()
                try:
                    return await get_msg(timeout=min(1.0, max(0.0, left)))
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

        client.shell_channel.get_msg = get_msg_in_slices
        return client


def cell_seconds(cell) -> float | None:
    """Busy-to-reply time of a cell from the timestamps nbclient records, or None."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.status.busy"), timing.get("shell.execute_reply")
    if not (start and end):
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def first_line(cell) -> str:
    lines = [line for line in cell.source.splitlines() if line.strip()]
    text = lines[0].strip() if lines else ""
    return text if len(text) <= 48 else text[:45] + "..."


def run_notebook(path: Path, mode: str, timeout: int, keep: Path | None) -> dict:
    """Execute one notebook in a fresh kernel; return its wall time, cell times and status."""
    notebook = nbformat.read(path, as_version=4)
    saved = {name: os.environ.get(name) for name in ("COURSE_FAST", "COURSE_CHECK_STRICT")}
    os.environ.update(COURSE_FAST=MODES[mode], COURSE_CHECK_STRICT="1")
    client = SlicedPollClient(notebook, timeout=timeout, kernel_name="python3",
                              record_timing=True,
                              resources={"metadata": {"path": str(NOTEBOOKS)}})
    error = None
    start = time.perf_counter()
    try:
        client.execute()
    except (CellExecutionError, DeadKernelError) as failure:
        error = ANSI.sub("", str(failure)).strip().splitlines()[-1][:120]
    finally:
        wall = time.perf_counter() - start
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, keep / f"{path.stem}.{mode}.ipynb")
    cells = [(index, cell_seconds(cell), first_line(cell))
             for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    timed = [(index, seconds, line) for index, seconds, line in cells if seconds is not None]
    if error is not None:
        error = f"FAILED at cell {timed[-1][0] if timed else '?'}: {error}"
    return {"wall": wall, "cells": timed, "code_cells": len(cells), "error": error}


def section(mode: str, results: dict[str, dict], slowest: int) -> str:
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    lines = [f"## mode: {mode} (COURSE_FAST={MODES[mode]})",
             f"run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}, "
             f"{cpu_name()}, {os.cpu_count()} cores (shared), OMP_NUM_THREADS={threads}", "",
             f"{'notebook':<36} {'wall s':>7} {'cells':>5}  slowest cells (cell: seconds)"]
    total = 0.0
    for name, result in results.items():
        total += result["wall"]
        ranked = sorted(result["cells"], key=lambda item: -item[1])[:slowest]
        summary = ", ".join(f"{index}: {seconds:.1f}" for index, seconds, _ in ranked)
        lines.append(f"{name:<36} {result['wall']:7.1f} {result['code_cells']:5d}  {summary}")
        if result["error"]:
            lines.append(f"{'':<36} {result['error']}")
    lines += [f"{'total':<36} {total:7.1f}", "", "slowest cells, first line of each:"]
    for name, result in results.items():
        for index, seconds, line in sorted(result["cells"], key=lambda item: -item[1])[:slowest]:
            lines.append(f"  {name[:2]} cell {index:>2} {seconds:7.1f} s  {line}")
    return "\n".join(lines) + "\n"


def merge(output: Path, sections: dict[str, str]) -> str:
    """The output file's text with the given modes' sections replaced (others kept)."""
    kept = {}
    if output.exists():
        text = output.read_text()
        starts = [(match.start(), match.group(1)) for match in SECTION.finditer(text)]
        ends = [begin for begin, _ in starts[1:]] + [len(text)]
        for (begin, mode), end in zip(starts, ends, strict=True):
            kept[mode] = text[begin:end].rstrip() + "\n"
    kept.update(sections)
    header = ("Notebook wall times (benchmarks/notebook_times.py): kernel start to last cell, "
              "and each notebook's slowest cells.\n\n")
    return header + "\n".join(kept[mode] for mode in MODES if mode in kept)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--notebooks", nargs="*", default=None,
                        help="numbers (00 03) or names; default: every NN_*.ipynb")
    parser.add_argument("--slowest", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--keep", type=Path, default=None,
                        help="save the executed notebooks in this folder")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if any(p.name.startswith(n) for n in args.notebooks)]
        if not paths:
            parser.error(f"no notebook matches {args.notebooks}")
    sections = {}
    for mode in MODES if args.mode == "both" else [args.mode]:
        results = {}
        for path in paths:
            print(f"{mode}: {path.name} ...", end=" ", flush=True)
            results[path.name] = run_notebook(path, mode, args.timeout, args.keep)
            print(f"{results[path.name]['wall']:.1f} s"
                  + (f"  {results[path.name]['error']}" if results[path.name]["error"] else ""),
                  flush=True)
        sections[mode] = section(mode, results, args.slowest)
        print(sections[mode])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(merge(args.output, sections))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
