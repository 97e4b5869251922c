"""--dataloader-num-workers: batches built in worker processes train exactly as batches built in the loop."""

from __future__ import annotations

import json

from medtune.tuning.cli import main

FAST = ["--no-eval-before", "--no-eval", "--quiet", "--batch-size", "2", "--max-steps", "2"]


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_one_worker_gives_the_same_losses_as_none(tmp_path, demo_cache):
    runs = {}
    for workers in ("0", "1"):
        out = tmp_path / f"w{workers}"
        argv = ["train", "llava", "ln", *FAST, "--log-every", "1", "--dataloader-num-workers", workers]
        assert main([*argv, "--output-dir", str(out)]) == 0
        (runs[workers],) = out.iterdir()
    assert len(_losses(runs["0"])) == 2
    assert _losses(runs["1"]) == _losses(runs["0"])
