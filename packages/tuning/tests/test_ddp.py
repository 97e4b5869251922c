"""Two gloo processes with batch B follow the loss curve of one process with batch 2B."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from medtune.tuning.cli import main

RUN = [
    "train",
    "llava",
    "ln",
    "--max-steps",
    "3",
    "--log-every",
    "1",
    "--no-eval-before",
    "--no-eval",
    "--quiet",
]


def curve_and_tensors(root):
    (run,) = root.iterdir()
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return losses, load_file(str(run / "adapter" / "adapter.safetensors"))


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_twice_the_batch(tmp_path, demo_cache):
    env = {**os.environ, "MEDTUNE_CACHE": str(demo_cache)}
    cmd = [sys.executable, "-m", "medtune.tuning.cli", *RUN, "--num-processes", "2", "--batch-size", "2"]
    done = subprocess.run(
        [*cmd, "--output-dir", str(tmp_path / "ddp")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*RUN, "--batch-size", "4", "--output-dir", str(tmp_path / "one")]) == 0
    ddp_losses, ddp_tensors = curve_and_tensors(tmp_path / "ddp")
    one_losses, one_tensors = curve_and_tensors(tmp_path / "one")
    assert len(ddp_losses) == 3
    # Equal up to the per-process token weighting of the mean loss.
    torch.testing.assert_close(torch.tensor(ddp_losses), torch.tensor(one_losses), rtol=2e-2, atol=1e-3)
    for name, tensor in one_tensors.items():
        torch.testing.assert_close(ddp_tensors[name], tensor, rtol=1e-3, atol=1e-4, msg=name)
