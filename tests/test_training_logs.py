"""tools/compare_training_logs.py: the paired loss table of benchmarks/results/ is what the
tool computes from the committed training logs, and the tool pairs and slices steps right."""

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
compare_training_logs = importlib.import_module("compare_training_logs")

LOG = "weights/codec/training/checkerboard-vr/log.csv"
STAGE14 = [f"s12={LOG}@94264:97764", f"s13={LOG}@97764:101264",
           "A=weights/codec/training/checkerboard-vr/stage14_lr1e-4_log.csv",
           f"B={LOG}@101264:104264"]


def test_the_committed_stage14_table_comes_from_the_committed_logs(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert compare_training_logs.main([*STAGE14, "--paired", "A", "B"]) == 0
    lines = capsys.readouterr().out.splitlines()
    report = (ROOT / "benchmarks/results/stage14_schedule_logs.txt").read_text().splitlines()
    assert len(lines) == 6
    assert all(line in report for line in lines)


def _log(path, rows):
    path.write_text("step,lr,loss\n" + "".join(f"{s},1e-4,{loss}\n" for s, loss in rows))
    return str(path)


def test_slices_count_steps_from_the_start_of_the_stage(tmp_path):
    combined = _log(tmp_path / "all.csv", [(50, 9.0), (100, 8.0), (150, 1.0), (200, 3.0)])
    name, losses = compare_training_logs.read_stage(f"late={combined}@100:200")
    assert name == "late" and losses == {50: 1.0, 100: 3.0}


def test_spans_average_only_the_steps_every_paired_stage_has(tmp_path):
    a_log = _log(tmp_path / "a.csv", [(50, 1.0), (100, 3.0)])
    b_log = _log(tmp_path / "b.csv", [(100, 5.0)])
    a = dict([compare_training_logs.read_stage(f"a={a_log}")])
    b = dict([compare_training_logs.read_stage(f"b={b_log}")])
    lines = compare_training_logs.compare({**a, **b}, [0, 100], paired=["a", "b"])
    assert lines == ["0-100 (1 rows)  a loss 3.0000  b loss 5.0000"]
    lines = compare_training_logs.compare({**a, **b}, [0, 100], paired=["a"])
    assert lines == ["0-100 (2 rows)  a loss 2.0000"]  # b lacks step 50: left out of the line


@pytest.mark.parametrize("spec, message", [
    ("nolog", "is not NAME=LOG"),
    ("x=missing.csv", "no log at"),
    ("x={log}@1-2", "is not FIRST:LAST"),
    ("x={log}@500:600", "selects no rows"),
])
def test_bad_specs_say_what_is_wrong(tmp_path, spec, message):
    log = _log(tmp_path / "l.csv", [(50, 1.0)])
    with pytest.raises(SystemExit, match=message):
        compare_training_logs.read_stage(spec.format(log=log))
