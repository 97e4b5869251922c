"""A run killed with SIGKILL and resumed ends with the same tuned tensors as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medtune.tuning.adapter import read_adapter_state
from medtune.tuning.cli import main

RUN = ["train", "llava", "ln", "--max-steps", "6", "--save-every", "2", "--batch-size", "2"]
FAST = ["--no-eval-before", "--no-eval", "--quiet", "--seed", "3"]


def only_run(root: Path) -> Path:
    (run,) = [p for p in root.iterdir() if not p.name.startswith(".")]
    return run


def checkpoint_step(run_dir: Path) -> int:
    position = run_dir / "checkpoint" / "position.json"
    return json.loads(position.read_text())["step"] if position.is_file() else 0


@pytest.mark.slow
def test_sigkill_midway_then_resume_equals_uninterrupted_run(tmp_path, demo_cache):
    assert main([*RUN, *FAST, "--output-dir", str(tmp_path / "straight")]) == 0
    straight = read_adapter_state(only_run(tmp_path / "straight") / "adapter")

    killed_root = tmp_path / "killed"
    env = {**os.environ, "MEDTUNE_CACHE": str(demo_cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medtune.tuning.cli", *RUN, *FAST, "--output-dir", str(killed_root)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list(killed_root.glob("*-llava-ln")) if killed_root.exists() else []
        if runs and checkpoint_step(runs[0]) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, (
        f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = only_run(killed_root)
    killed_at = checkpoint_step(run_dir)
    assert 2 <= killed_at < 6 and not (run_dir / "adapter").exists()

    assert main([*RUN, *FAST, "--output-dir", str(killed_root), "--resume", str(run_dir)]) == 0
    resumed = read_adapter_state(run_dir / "adapter")
    assert resumed.keys() == straight.keys() and len(straight) > 0
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["--paradigm", "T,F,PEFT,F"], "paradigm 'F,F,PEFT,F' there, 'T,F,PEFT,F' now"),
        (["--lr", "0.5"], "lr 0.01 there, 0.5 now"),
    ],
)
def test_resume_from_another_configuration_is_refused_and_changes_nothing(
    change, expected, tmp_path, demo_cache, capsys
):
    assert main([*RUN, *FAST, "--max-steps", "2", "--output-dir", str(tmp_path / "runs")]) == 0
    done = only_run(tmp_path / "runs")
    before = {p: p.stat().st_mtime_ns for p in done.rglob("*")}
    capsys.readouterr()
    assert (
        main(
            [
                *RUN,
                *FAST,
                "--max-steps",
                "2",
                *change,
                "--output-dir",
                str(tmp_path / "runs"),
                "--resume",
                str(done),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "was made with another configuration" in err and expected in err
    assert {p: p.stat().st_mtime_ns for p in done.rglob("*")} == before
