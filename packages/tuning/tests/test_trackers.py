"""--report-to tensorboard,wandb,mlflow: each tracker gets the logged scalars, offline, inside the run directory."""

from __future__ import annotations

import json

import pytest

from medtune.tuning import trackers
from medtune.tuning.cli import main
from medtune.tuning.errors import UsageError


@pytest.mark.skipif(
    not all(trackers.available(t) for t in ("tensorboard", "wandb", "mlflow")),
    reason="needs medtune[tensorboard,wandb,mlflow]",
)
@pytest.mark.slow  # about 35 s on 2 shared cores, most of it starting wandb and mlflow
def test_one_run_reports_to_all_three_trackers_offline(tmp_path, demo_cache, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")  # nothing leaves the machine
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "runs"
    argv = ["train", "llava", "ln", "--max-steps", "2", "--logging-steps", "1", "--batch-size", "2"]
    argv += ["--report-to", "tensorboard,wandb,mlflow", "--no-eval-before", "--no-eval", "--quiet"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    (run,) = out.iterdir()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged]

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)

    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "medtune-llava-ln"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(mlrun.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["loss"])) for r in logged]
    assert mlrun.data.params["lr"] == "0.01" and mlrun.data.params["method_options.lora_dropout"] == "0.05"

    (wandb_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
    assert b"train/loss" in wandb_file.read_bytes()


def test_a_tracker_that_is_not_installed_is_one_sentence_before_anything_loads(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(trackers.NEEDS, "wandb", ("medtune_no_such_module", "wandb"))
    out = tmp_path / "runs"
    assert main(["train", "llava", "ln", "--report-to", "wandb", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "wandb is not installed; pip install 'medtune[wandb]'" in err and err.count("\n") == 1
    assert not out.exists()


def test_the_default_tracker_is_dropped_not_refused_where_missing(monkeypatch):
    monkeypatch.setitem(trackers.NEEDS, "tensorboard", ("medtune_no_such_module", "tensorboard"))
    assert trackers.check_trackers(("tensorboard",)) == ()
    with pytest.raises(UsageError, match="tensorboard is not installed"):
        trackers.check_trackers(("tensorboard", "mlflow"))
    assert trackers.check_trackers(()) == ()


def test_settings_are_flattened_to_scalars_trackers_accept():
    flat = trackers.flat({"lr": 0.1, "method_options": {"lora_targets": ("q", "v"), "rank": None}, "x": [1]})
    assert flat == {"lr": 0.1, "method_options.lora_targets": "q,v", "method_options.rank": "none", "x": "1"}
