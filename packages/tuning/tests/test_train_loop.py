"""The training loop's guards and options: NaN stop, validation with a best adapter, checkpointing numerics."""

from __future__ import annotations

import json

import pytest
import torch

from medtune.core_models import load
from medtune.data import demo_dataset, read_vqa
from medtune.tuning.apply import apply_paradigm
from medtune.tuning.batches import make_collator
from medtune.tuning.checkpoint import check_free_space
from medtune.tuning.cli import main
from medtune.tuning.errors import UsageError
from medtune.tuning.paradigm import Paradigm
from medtune.tuning.train_setup import enable_checkpointing

FAST = ["--no-eval-before", "--no-eval", "--quiet", "--batch-size", "2"]


def ln_grads(grad_checkpointing: bool, method: str = "ln") -> tuple[dict[str, torch.Tensor], int]:
    """Return the tuned gradients of tiny-llava on 4 demo questions, and the frozen tower's backward calls."""
    built = load("tiny-llava")
    torch.manual_seed(0)  # LoRA's initial A factors and its dropout masks, the same in both runs
    tuned = apply_paradigm(built.model, "llava", method, Paradigm.parse(None, "llava"))
    if grad_checkpointing:
        enable_checkpointing(tuned.model)
    tuned.model.train()
    tower_backward: list[int] = []
    first = next(m for n, m in tuned.model.named_modules() if "vision_tower" in n and n.endswith("layers.0"))
    first.register_full_backward_hook(lambda *_: tower_backward.append(1))
    batch = make_collator(built, train=True)(read_vqa(demo_dataset("downstream"), "train")[:4])
    batch.pop("qids")
    torch.manual_seed(0)
    tuned.model(**batch).loss.backward()
    grads = {n: p.grad for n, p in tuned.model.named_parameters() if p.requires_grad}
    return grads, len(tower_backward)


@pytest.mark.parametrize("method", ["ln", "lora"])
def test_gradient_checkpointing_gets_the_same_gradients_and_leaves_the_frozen_tower_out(demo_cache, method):
    (plain, plain_tower), (checkpointed, checkpointed_tower) = ln_grads(False, method), ln_grads(True, method)
    # The frozen vision tower stays out of the backward, with checkpointing as without it.
    assert plain_tower == checkpointed_tower == 0
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    assert all(g is not None for g in plain.values()) and any(g.abs().sum() > 0 for g in plain.values())
    for name, grad in plain.items():  # (LoRA's A factors start with no gradient: B is zero)
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_validation_every_n_steps_keeps_the_best_adapter_and_draws_the_curve(tmp_path, demo_cache):
    out = tmp_path / "runs"
    assert (
        main(
            ["train", "llava", "ln", "--max-steps", "2", "--eval-every", "1", *FAST, "--output-dir", str(out)]
        )
        == 0
    )
    (run,) = out.iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in val] == [1, 2]
    best = json.loads((run / "best" / "manifest.json").read_text())
    assert best["val_loss"] == min(r["val_loss"] for r in val)
    assert best["step"] == min(val, key=lambda r: r["val_loss"])["step"]
    assert (run / "loss.png").stat().st_size > 1000


def test_nan_loss_stops_with_the_step_and_the_flag_to_lower(tmp_path, demo_cache, capsys):
    built = load("tiny-llava")
    with torch.no_grad():
        built.model.model.language_model.norm.weight.fill_(float("nan"))
    ckpt = tmp_path / "nan-base"
    built.model.save_pretrained(ckpt)
    built.tokenizer.save_pretrained(ckpt)
    built.image_processor.save_pretrained(ckpt)
    argv = ["train", "llava", "ln", "--model-path", str(ckpt), "--max-steps", "3", *FAST]
    assert main([*argv, "--output-dir", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert "loss became nan at step 1" in err and "lower --lr (now 2e-05)" in err


def test_missing_model_path_is_one_sentence_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    assert (
        main(
            ["train", "llava", "ln", "--model-path", str(tmp_path / "nope"), *FAST, "--output-dir", str(out)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"model path {tmp_path / 'nope'} does not exist" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--save-every", "--eval-every", "--log-every"])
def test_non_positive_intervals_are_refused(flag, tmp_path, capsys):
    assert main(["train", "llava", "ln", flag, "0", "--output-dir", str(tmp_path / "runs")]) == 2
    assert f"{flag} must be at least 1, got 0" in capsys.readouterr().err


def test_not_enough_disk_for_a_checkpoint_is_a_sentence(tmp_path):
    with pytest.raises(UsageError, match="not enough disk space for the checkpoint"):
        check_free_space(tmp_path, 10**18, "checkpoint")
