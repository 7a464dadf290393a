#!/usr/bin/env bash
# Refresh a shipped codec model from a training run (see README.md in this folder).
#
#   weights/codec/export.sh RUN            a run trained from scratch: its log replaces the log
#   weights/codec/export.sh RUN STEPS      a run started with --init from shipped weights, which
#                                          had STEPS steps: its log is appended, with step and
#                                          seconds counted on from the previous stages
#   MODEL=checkerboard-vr weights/codec/export.sh RUN STEPS
#                                          another shipped model (default: mean-scale-vr); its
#                                          log lives in training/MODEL/ (mean-scale-vr's in
#                                          training/); FROM=mean-scale-vr starts its log with
#                                          that model's log (a model grown from it)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/msh-vr}
BEFORE=${2:-}
MODEL=${MODEL:-mean-scale-vr}
if [ "$MODEL" = mean-scale-vr ]; then LOGS=weights/codec/training; else LOGS=weights/codec/training/$MODEL; fi
mkdir -p "$LOGS"
if [ -n "${FROM:-}" ]; then
    cp weights/codec/training/log.csv "$LOGS/log.csv"  # the stages of the model it grew from
fi
python -m course_lib export --run-dir "$RUN" --out "weights/codec/$MODEL.pt"
cp "$RUN/config.json" "$LOGS/"
if [ -z "$BEFORE" ]; then
    cp "$RUN/log.csv" "$LOGS/"
else
    python - "$RUN/log.csv" "$LOGS/log.csv" "$BEFORE" <<'PY'
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
python -m course_lib.weights record "weights/codec/$MODEL.pt" "$LOGS/log.csv"
