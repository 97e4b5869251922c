"""Runs tuned with --4bit export into the full-precision base, saved in the base precision."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from medtune.core_models import load
from medtune.data import demo_dataset, read_vqa
from medtune.tuning import load_adapter
from medtune.tuning.apply import apply_paradigm
from medtune.tuning.cli import main
from medtune.tuning.paradigm import Paradigm

pytest.importorskip("bitsandbytes", reason="--4bit needs bitsandbytes")

FAST = ["--no-eval-before", "--no-eval", "--quiet", "--batch-size", "2", "--max-steps", "2", "--lr", "0.05"]


@pytest.mark.parametrize("method", ["ln", "lora"])
def test_4bit_run_exports_a_full_precision_checkpoint_equal_to_base_plus_adapter(
    model_logits, method, tmp_path, demo_cache, capsys
):
    runs = tmp_path / "runs"
    assert main(["train", "llava", method, "--4bit", *FAST, "--output-dir", str(runs)]) == 0
    assert "now NF4" in capsys.readouterr().out  # the run really trained on quantised frozen weights
    (run,) = runs.iterdir()
    out = tmp_path / "merged"
    assert main(["export", str(run), "--merge", "--out", str(out)]) == 0
    assert "tuned on 4-bit (NF4) frozen weights" in capsys.readouterr().out

    base = load("tiny-llava")
    saved = load_file(str(out / "model.safetensors"))
    want = load_file(str(base.preset.default_weights / "model.safetensors"))  # the checkpoint as published
    # No NF4 blocks or LoRA factors left: exactly the base's tensors, shapes and precision (fp16 here).
    assert {n: (t.shape, t.dtype) for n, t in saved.items()} == {
        n: (t.shape, t.dtype) for n, t in want.items()
    }

    records = read_vqa(demo_dataset("downstream"), "test")[:3]
    untouched = model_logits(base, records)
    adapted = load("tiny-llava")
    adapted.model = apply_paradigm(adapted.model, "llava", method, Paradigm.parse(None, "llava")).model
    load_adapter(adapted.model, run / "adapter")
    got, want = model_logits(load("tiny-llava", out), records), model_logits(adapted, records)
    # The export is rounded to the base's fp16, so it is compared by distance: far closer to base + adapter
    # than the adapter moved the base.
    assert (got - untouched).abs().max() > 1e-3  # the adapter changed the model
    assert (got - want).abs().max() < 0.1 * (want - untouched).abs().max()


def test_a_4bit_base_fingerprints_like_its_checkpoint_from_64_values_per_weight(demo_cache, monkeypatch):
    from medtune.core_models.build import full_precision_weights
    from medtune.core_models.quantize import FourBit
    from medtune.tuning.adapter import base_fingerprint
    from medtune.tuning.stored_tensors import Located, Stored

    full = load("tiny-llava")
    nf4 = load("tiny-llava", four_bit=FourBit())
    assert nf4.quantized
    located = Located(full_precision_weights(nf4))
    assert all(isinstance(located[name], Stored) for name in located)
    # Only the sampled values are read: a whole-tensor read of the checkpoint now fails the test.
    monkeypatch.setattr("medtune.core_models.weights.read_tensor", lambda *a: pytest.fail("read whole"))
    assert base_fingerprint(nf4.model, full_precision=located) == base_fingerprint(full.model)
