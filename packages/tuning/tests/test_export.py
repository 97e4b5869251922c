"""Adapters: merged export equals the adapted model, another base is refused, LN swaps take milliseconds."""

from __future__ import annotations

import time

import pytest
import torch

from medtune.core_models import load
from medtune.data import demo_dataset, read_vqa
from medtune.tuning import load_adapter
from medtune.tuning.cli import main
from medtune.tuning.export import merged_model
from medtune.tuning.rebuild import rebuild_from_manifest

FAST = ["--no-eval-before", "--no-eval", "--quiet", "--batch-size", "2", "--max-steps", "2"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, demo_cache):
    out = tmp_path_factory.mktemp("lora-runs")
    assert main(["train", "llava", "lora", *FAST, "--lr", "0.05", "--output-dir", str(out)]) == 0
    (run,) = out.iterdir()
    return run


def test_export_merge_writes_a_checkpoint_that_predicts_like_base_plus_adapter(
    model_logits, lora_run, tmp_path, demo_cache
):
    records = read_vqa(demo_dataset("downstream"), "test")[:3]
    out = tmp_path / "merged"
    assert main(["export", str(lora_run), "--merge", "--out", str(out)]) == 0
    merged = load("tiny-llava", out)
    assert not any(".lora_" in n for n, _ in merged.model.named_parameters())
    adapted = rebuild_from_manifest(lora_run / "adapter")  # base + unmerged adapter, in fp32
    assert (
        next(merged_model(lora_run / "adapter").model.parameters()).dtype == torch.float16
    )  # the base's own
    base = load("tiny-llava")
    got, want, untouched = (
        model_logits(merged, records),
        model_logits(adapted, records),
        model_logits(base, records),
    )
    # The export is rounded to the base's fp16, so it is compared by distance: far closer to base + adapter
    # than the adapter moved the base (which it did, so the comparison means something).
    assert (want - untouched).abs().max() > 1e-3
    assert (got - want).abs().max() < 0.1 * (want - untouched).abs().max()


def test_export_refuses_a_non_empty_out_folder(lora_run, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["export", str(lora_run), "--merge", "--out", str(tmp_path)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_export_to_a_nearly_full_disk_is_a_sentence_before_anything_is_written(
    lora_run, tmp_path, capsys, monkeypatch
):
    import shutil

    from medtune.tuning.errors import UsageError
    from medtune.tuning.export import export_merged

    real = shutil.disk_usage
    monkeypatch.setattr(
        "medtune.tuning.run_dir.shutil.disk_usage", lambda path: real(path)._replace(free=100_000)
    )
    out = tmp_path / "exports" / "merged"
    assert main(["export", str(lora_run), "--merge", "--out", str(out)]) == 2  # streamed
    err = capsys.readouterr().err
    assert "not enough disk space for the merged export" in err and "pass --out on a larger disk" in err
    assert "Traceback" not in err and not (tmp_path / "exports").exists()  # the 4.4 MB base needs more
    with pytest.raises(UsageError, match="not enough disk space for the merged export"):
        export_merged(lora_run / "adapter", out, stream=False)  # the in-memory path checks too
    assert not (tmp_path / "exports").exists()


def test_load_adapter_refuses_an_adapter_made_for_another_base_and_swaps_ln_fast(tmp_path, demo_cache):
    out = tmp_path / "runs"
    assert main(["train", "llava", "ln", *FAST, "--output-dir", str(out)]) == 0
    (run,) = out.iterdir()
    from medtune.tuning.apply import apply_paradigm
    from medtune.tuning.paradigm import Paradigm

    other = load("tiny-llava")
    with torch.no_grad():
        other.model.model.language_model.layers[0].mlp.up_proj.weight.add_(0.01)
    with pytest.raises(ValueError, match="was made for another base model"):
        load_adapter(other.model, run / "adapter")

    same = load("tiny-llava")
    model = apply_paradigm(same.model, "llava", "ln", Paradigm.parse(None, "llava")).model
    load_adapter(model, run / "adapter")  # checks the fingerprint once
    start = time.perf_counter()
    for _ in range(10):
        load_adapter(model, run / "adapter", check_base=False)
    per_swap = (time.perf_counter() - start) / 10
    assert per_swap < 0.5, f"an LN adapter swap took {per_swap * 1000:.0f} ms"
    print(f"LN adapter swap: {per_swap * 1000:.1f} ms")
