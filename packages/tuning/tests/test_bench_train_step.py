"""benchmarks/train_step on the tiny shape: the real `medtune train` path writes a checkpoint, runs, logs a row."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "train_step" / "bench_train_step.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_train_step_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_shape_runs_medtune_train_from_disk_and_appends_a_measured_row(tmp_path, demo_cache):
    module = load_script()
    out = tmp_path / "train_step.csv"
    argv = ["--shape", "tiny", "--runs", "old", "--steps", "3", "--scratch", str(tmp_path), "--out", str(out)]
    assert module.main(argv) == 0
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == module.COLUMNS
        (row,) = list(reader)
    assert (row["shape"], row["run"], row["exit"]) == ("tiny", "old", "0")
    assert row["command"].startswith("medtune train llava ln --preset tiny-llava --model-path ")
    # the settings the "old" run fixes reach the run itself (config.json), not just its command line
    assert (row["batch_size"], row["load_4bit"], row["grad_checkpointing"]) == ("1", "True", "True")
    # the tiny model does too few FLOP per token for useful TFLOP/s to show at two decimals
    assert float(row["tokens_per_s"]) > 0 and float(row["useful_tflops"]) >= 0
    assert int(row["measured_peak_bytes"]) > 0 and int(row["planned_peak_bytes"]) > 0
    assert not list(tmp_path.glob("medtune-bench-train-step-*"))  # the scratch checkpoint is removed


def test_an_unknown_run_is_refused_before_anything_is_written(tmp_path, capsys):
    module = load_script()
    with pytest.raises(SystemExit) as exit_:
        module.main(["--runs", "old,fastest", "--out", str(tmp_path / "x.csv")])
    assert exit_.value.code == 2
    assert "unknown run(s) fastest" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
