#!/usr/bin/env bash
# Refresh the shipped codec weights from a training run (see README.md in this folder).
#
#   weights/codec/export.sh RUN            a run trained from scratch: its log replaces the log
#   weights/codec/export.sh RUN STEPS      a run started with --init from the shipped weights,
#                                          which had STEPS steps: its log is appended, with
#                                          step and seconds counted on from the previous stages
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/msh-vr}
BEFORE=${2:-}
python -m course_lib export --run-dir "$RUN" --out weights/codec/mean-scale-vr.pt
cp "$RUN/config.json" weights/codec/training/
if [ -z "$BEFORE" ]; then
    cp "$RUN/log.csv" weights/codec/training/
else
    python - "$RUN/log.csv" weights/codec/training/log.csv "$BEFORE" <<'PY'
import csv, sys
new, old, before = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(old, newline="") as f:
    rows = list(csv.DictReader(f))
seconds = float(rows[-1]["seconds"])
with open(new, newline="") as f:
    for row in csv.DictReader(f):
        row["step"] = str(int(row["step"]) + before)
        row["seconds"] = f"{float(row['seconds']) + seconds:.3f}"
        rows.append(row)
with open(old, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
PY
fi
python -m course_lib.weights record weights/codec/mean-scale-vr.pt weights/codec/training/log.csv
