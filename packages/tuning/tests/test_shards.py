"""Several processes' batches add up to one process's: top-up repeats found exactly, losses token-weighted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from safetensors.torch import load_file
from torch.utils.data import BatchSampler, SequentialSampler

from medtune.data import IGNORE_INDEX, demo_dataset
from medtune.tuning.cli import main
from medtune.tuning.shards import label_tokens, real_rows, weight_padding


@pytest.mark.parametrize(
    ("samples", "batch_size", "processes"), [(316, 8, 2), (7, 2, 2), (5, 4, 3), (1, 3, 2), (12, 4, 3)]
)
def test_real_rows_are_exactly_the_samples_one_process_sees(samples, batch_size, processes):
    seen = []
    for rank in range(processes):
        plain = BatchSampler(SequentialSampler(range(samples)), batch_size, drop_last=False)
        shard = BatchSamplerShard(plain, processes, rank, split_batches=False, even_batches=True)
        for k, batch in enumerate(shard):
            real = real_rows(k, samples, batch_size, rank, processes)
            seen += batch[:real]
    assert sorted(seen) == list(range(samples))  # every sample once, no top-up repeat counted


class TwoProcesses:
    """What weight_padding asks of an accelerator, for one of two processes whose tokens are given."""

    num_processes = 2

    def __init__(self, other_tokens: int):
        self.other = other_tokens

    def reduce(self, tensor, reduction):
        assert reduction == "sum"
        return tensor + self.other


def test_weights_make_the_average_the_token_mean_and_mask_the_top_up():
    labels = torch.tensor([[IGNORE_INDEX, 5, 6, IGNORE_INDEX], [IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX]])
    batch = {"labels": labels.clone()}
    share = weight_padding(batch, 1, TwoProcesses(other_tokens=6))  # row 1 repeats an earlier sample
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * 4 and label_tokens(batch["labels"]) == 2
    assert share == pytest.approx(2 * 2 / 8)
    empty = {"labels": labels.clone()}
    assert weight_padding(empty, 0, TwoProcesses(other_tokens=6)) == 0.0
    assert torch.equal(empty["labels"], labels)  # labels kept: a mean over no token would be NaN


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_match_one_on_the_epochs_last_partial_batch(tmp_path, demo_cache):
    """7 questions: one process at batch 4 takes 4 + 3; two at batch 2 take (2, 2) + (2, 1 and a repeat)."""
    root = tmp_path / "Slake"
    shutil.copytree(demo_dataset("downstream"), root)
    rows = json.loads((root / "train.json").read_text())[:7]
    (root / "train.json").write_text(json.dumps(rows))
    run = ["train", "llava", "ln", "--dataset", str(root), "--epochs", "1", "--log-every", "1"]
    run += ["--no-eval-before", "--no-eval", "--quiet", "--lr", "0.05"]
    env = {**os.environ, "MEDTUNE_CACHE": str(demo_cache)}
    cmd = [sys.executable, "-m", "medtune.tuning.cli", *run, "--num-processes", "2", "--batch-size", "2"]
    done = subprocess.run(
        [*cmd, "--output-dir", str(tmp_path / "ddp")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*run, "--batch-size", "4", "--output-dir", str(tmp_path / "one")]) == 0
    curves, tensors = [], []
    for name in ("ddp", "one"):
        (folder,) = (tmp_path / name).iterdir()
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        curves.append(
            torch.tensor([json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)])
        )
        tensors.append(load_file(str(next((folder / "adapter").glob("*.safetensors")))))
    assert len(curves[1]) == 2
    torch.testing.assert_close(curves[0], curves[1], rtol=1e-5, atol=1e-6)
    for name, tensor in tensors[1].items():
        torch.testing.assert_close(tensors[0][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
