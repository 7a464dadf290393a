#!/usr/bin/env bash
# Refresh the shipped codec weights from the training run (see README.md in this folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/msh-vr}
python -m course_lib export --run-dir "$RUN" --out weights/codec/mean-scale-vr.pt
cp "$RUN/config.json" "$RUN/log.csv" weights/codec/training/
(cd weights/codec && sha256sum mean-scale-vr.pt > SHA256SUMS)
