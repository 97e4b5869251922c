"""FSDP2 on the CPU: two gloo processes, full shard per decoder layer, same curve as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from torch import nn

from medtune.core_models import load
from medtune.tuning.adapter import read_adapter_state, tuned_state
from medtune.tuning.apply import apply_paradigm
from medtune.tuning.cli import main
from medtune.tuning.paradigm import Paradigm

RUN = ["train", "llava", "ln", "--max-steps", "3", "--log-every", "1", "--no-eval-before", "--quiet"]


def curve_and_tensors(root):
    (run,) = root.iterdir()
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return run, losses, read_adapter_state(run / "adapter")


def test_two_process_fsdp_matches_one_process_and_saves_full_tensors(tmp_path, demo_cache):
    env = {**os.environ, "MEDTUNE_CACHE": str(demo_cache)}
    cmd = [sys.executable, "-m", "medtune.tuning.cli", *RUN, "--num-processes", "2", "--batch-size", "2"]
    done = subprocess.run(
        [*cmd, "--fsdp", "--output-dir", str(tmp_path / "fsdp")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FSDP2: 4 LlamaDecoderLayer units" in done.stdout
    assert main([*RUN, "--no-eval", "--batch-size", "4", "--output-dir", str(tmp_path / "one")]) == 0
    run, fsdp_losses, fsdp_tensors = curve_and_tensors(tmp_path / "fsdp")
    _, one_losses, one_tensors = curve_and_tensors(tmp_path / "one")
    assert len(fsdp_losses) == 3
    torch.testing.assert_close(torch.tensor(fsdp_losses), torch.tensor(one_losses), rtol=2e-2, atol=1e-3)

    # Gathered, not one process's shard: every tuned tensor has the unsharded model's full shape.
    plain = apply_paradigm(load("tiny-llava").model, "llava", "ln", Paradigm.parse(None, "llava"))
    shapes = {n: p.shape for n, p in plain.model.named_parameters() if n in plain.trainable}
    assert {n: t.shape for n, t in fsdp_tensors.items()} == shapes
    for name, tensor in one_tensors.items():
        torch.testing.assert_close(fsdp_tensors[name], tensor, rtol=1e-3, atol=1e-4, msg=name)
    # The final scoring ran on an unsharded copy of the tuned model.
    assert "global" in json.loads((run / "scores.json").read_text())


def test_tuned_state_of_plain_tensors_is_a_detached_cpu_copy_of_only_the_named():
    model = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5))
    state = tuned_state(model, {"1.weight", "1.bias"})
    assert set(state) == {"1.weight", "1.bias"}
    assert all(not t.requires_grad and t.device.type == "cpu" for t in state.values())
    torch.testing.assert_close(state["1.weight"], model[1].weight.detach())


def test_fsdp_without_several_processes_is_refused(tmp_path, capsys):
    assert main([*RUN, "--fsdp", "--output-dir", str(tmp_path / "runs")]) == 2
    assert "--fsdp shards the model over processes; add --num-processes 2" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_fsdp_with_4bit_is_refused(tmp_path, capsys):
    argv = [*RUN, "--fsdp", "--4bit", "--num-processes", "2", "--output-dir", str(tmp_path / "runs")]
    assert main(argv) == 2
    assert "--fsdp with --4bit is not supported" in capsys.readouterr().err
