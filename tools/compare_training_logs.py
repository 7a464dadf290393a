"""Compare training stages row by row: mean loss over spans of steps, paired by step.

Stages that start from the same weights with the same seed see the same batches, so their
losses at the same step can be compared directly (a learning-rate choice, for example).
Each stage is ``NAME=LOG`` or ``NAME=LOG@FIRST:LAST``; the second form takes the rows of a
combined log (``weights/codec/training/*/log.csv``) with FIRST < step <= LAST and counts
their steps from FIRST::

    python tools/compare_training_logs.py \\
        s12=weights/codec/training/checkerboard-vr/log.csv@94264:97764 \\
        s13=weights/codec/training/checkerboard-vr/log.csv@97764:101264 \\
        A=weights/codec/training/checkerboard-vr/stage14_lr1e-4_log.csv \\
        B=weights/codec/training/checkerboard-vr/log.csv@101264:104264

Only the steps that every stage named with ``--paired`` has are averaged (all stages by
default); a stage without all of a span's steps is left out of that span's line.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def read_stage(spec: str) -> tuple[str, dict[int, float]]:
    """``NAME=PATH[@FIRST:LAST]`` -> (name, {step counted from FIRST: loss})."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"error: {spec!r} is not NAME=LOG or NAME=LOG@FIRST:LAST")
    path, at, span = rest.partition("@")
    first, last = 0, None
    if at:
        try:
            lo, hi = span.split(":")
            first, last = int(lo), int(hi)
        except ValueError:
            raise SystemExit(
                f"error: {span!r} in {spec!r} is not FIRST:LAST (two step numbers)") from None
    if not Path(path).is_file():
        raise SystemExit(f"error: no log at {path} (a training run's log.csv)")
    losses = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"step", "loss"} <= set(reader.fieldnames or ()):
            raise SystemExit(f"error: {path} has no 'step' and 'loss' columns: not a training log")
        for row in reader:
            step = int(row["step"])
            if step > first and (last is None or step <= last):
                losses[step - first] = float(row["loss"])
    if not losses:
        raise SystemExit(f"error: {spec!r} selects no rows of {path}")
    return name, losses


def compare(stages: dict[str, dict[int, float]], spans: list[int], paired: list[str]) -> list[str]:
    """One line per span: each stage's mean loss over the steps the ``paired`` stages share."""
    common = set.intersection(*(set(stages[name]) for name in paired))
    lines = []
    for lo, hi in zip(spans[:-1], spans[1:], strict=True):
        steps = sorted(s for s in common if lo < s <= hi)
        if not steps:
            continue
        parts = [f"{lo}-{hi} ({len(steps)} rows)"]
        for name, losses in stages.items():
            if all(s in losses for s in steps):
                parts.append(f"{name} loss {sum(losses[s] for s in steps) / len(steps):.4f}")
        lines.append("  ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+", metavar="NAME=LOG[@FIRST:LAST]")
    parser.add_argument("--spans", type=int, nargs="+",
                        default=[0, 600, 1200, 1800, 2400, 2800, 3000],
                        help="span edges in steps (default: %(default)s)")
    parser.add_argument("--paired", nargs="+", metavar="NAME",
                        help="average over the steps these stages share (default: all)")
    args = parser.parse_args(argv)
    stages = dict(read_stage(spec) for spec in args.stages)
    paired = args.paired or list(stages)
    unknown = [name for name in paired if name not in stages]
    if unknown:
        parser.error(f"--paired names {unknown}, not among the stages {list(stages)}")
    if sorted(args.spans) != args.spans or len(args.spans) < 2:
        parser.error("--spans needs at least two step numbers in increasing order")
    print("\n".join(compare(stages, args.spans, paired)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
