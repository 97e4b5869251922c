"""With tensorboard installed, a run writes its training scalars as event files under RUN_DIR/tensorboard."""

from __future__ import annotations

import json

import pytest

from medtune.tuning.cli import main

pytest.importorskip(
    "torch.utils.tensorboard",
    reason="tensorboard is not installed (pip install 'medtune-tuning[tensorboard]')",
)


def test_a_run_writes_tensorboard_events_matching_metrics(tmp_path, demo_cache):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "runs"
    argv = ["train", "llava", "ln", "--max-steps", "2", "--log-every", "1", "--batch-size", "2"]
    assert main([*argv, "--no-eval-before", "--no-eval", "--quiet", "--output-dir", str(out)]) == 0
    (run,) = out.iterdir()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/tokens_per_s"} <= set(events.Tags()["scalars"])
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    board = events.Scalars("train/loss")
    assert [e.step for e in board] == [r["step"] for r in logged] == [1, 2]
    assert [e.value for e in board] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
