"""Two gloo processes with batch B follow the loss curve of one process with batch 2B."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medtune.tuning.adapter import read_adapter_state
from medtune.tuning.cli import main
from medtune.tuning.commands.train import accelerate_distributed_type
from medtune.tuning.errors import UsageError

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
    return losses, read_adapter_state(run / "adapter")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_twice_the_batch(tmp_path, demo_cache):
    env = {**os.environ, "MEDTUNE_CACHE": str(demo_cache)}
    cmd = [sys.executable, "-m", "medtune.tuning.cli", *RUN, "--num-processes", "2", "--batch-size", "2"]
    done = subprocess.run(
        [*cmd, "--output-dir", str(tmp_path / "ddp")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The settings and the summary are said once, not again by each launched process.
    assert done.stdout.count("medtune train llava ln |") == 1, done.stdout
    assert done.stdout.count("== summary ==") == 1, done.stdout
    assert main([*RUN, "--batch-size", "4", "--output-dir", str(tmp_path / "one")]) == 0
    ddp_losses, ddp_tensors = curve_and_tensors(tmp_path / "ddp")
    one_losses, one_tensors = curve_and_tensors(tmp_path / "one")
    assert len(ddp_losses) == 3
    # Equal up to the per-process token weighting of the mean loss.
    torch.testing.assert_close(torch.tensor(ddp_losses), torch.tensor(one_losses), rtol=2e-2, atol=1e-3)
    for name, tensor in one_tensors.items():
        torch.testing.assert_close(ddp_tensors[name], tensor, rtol=1e-3, atol=1e-4, msg=name)


SHIPPED = Path(__file__).resolve().parents[1] / "src" / "medtune" / "tuning" / "accelerate_configs"


def test_accelerate_configs_are_read_for_their_distributed_type(tmp_path):
    assert accelerate_distributed_type(SHIPPED / "fsdp_full_shard.yaml") == "FSDP"
    assert accelerate_distributed_type(SHIPPED / "multi_gpu_ddp.yaml") == "MULTI_GPU"
    with pytest.raises(UsageError, match="does not exist"):
        accelerate_distributed_type(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("distributed_type: [FSDP\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        accelerate_distributed_type(tmp_path / "bad.yaml")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without GPUs")
def test_processes_that_do_not_form_one_group_are_refused_before_anything_is_written(tmp_path, demo_cache):
    # accelerate launch with a GPU config on a CPU machine starts 2 independent single-process runs;
    # each must refuse instead of writing a run directory of its own.
    env = {**os.environ, "MEDTUNE_CACHE": str(demo_cache)}
    cmd = [sys.executable, "-m", "medtune.tuning.cli", *RUN, "--num-processes", "2"]
    cmd += [
        "--accelerate-config",
        str(SHIPPED / "fsdp_full_shard.yaml"),
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "fsdp_full_shard.yaml asks for FSDP" in done.stdout  # the config meant medtune's own --fsdp
    if "no available devices found" not in done.stderr:  # accelerate 1.0 refuses the GPU config itself
        assert done.stderr.count("2 processes were launched but this one sees a group of 1") == 2
    assert not (tmp_path / "runs").exists()
