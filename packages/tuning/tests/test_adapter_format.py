"""Adapters carry their method's whole config and load in PEFT alone with the logits medtune's loader gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medtune.core_models import load
from medtune.data import demo_dataset, read_vqa
from medtune.tuning.adapter import MANIFEST, PEFT_WEIGHTS, WEIGHTS, read_manifest, tuned_state
from medtune.tuning.batches import make_collator
from medtune.tuning.cli import main
from medtune.tuning.rebuild import rebuild_from_manifest

FAST = ["--no-eval-before", "--no-eval", "--quiet", "--batch-size", "2", "--max-steps", "2"]
SCRIPT = Path(__file__).with_name("peft_logits.py")
# (name, family, method, extra flags): every method family PEFT can express, a T group in each family.
RUNS = [
    ("llava-ln", "llava", "ln", ["--lr", "0.05"]),
    ("llava-lora-connector-T", "llava", "lora", ["--paradigm", "F,T,PEFT,F", "--lr", "0.05"]),
    ("llava-prefix7", "llava", "prefix", ["--prefix-tokens", "7", "--lr", "0.05"]),
    ("miss-ln-vit-dec-T", "miss", "ln", ["--lr", "0.01"]),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_cache) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapter-runs")
    found = {}
    for name, family, method, flags in RUNS:
        out = root / name
        assert main(["train", family, method, *FAST, *flags, "--output-dir", str(out)]) == 0
        (found[name],) = out.iterdir()
    return found


def inputs(built) -> dict:
    """Return a teacher-forced batch of three demo questions for ``built``'s family."""
    batch = make_collator(built, train=True)(read_vqa(demo_dataset("downstream"), "test")[:3])
    batch.pop("qids")
    return batch


def medtune_outputs(built, batch) -> dict[str, torch.Tensor]:
    built.model.eval()
    with torch.no_grad():
        out = built.model(**batch)
    return {
        f: getattr(out, f) for f in ("logits", "loss", "image_embeds") if getattr(out, f, None) is not None
    }


def test_manifest_stores_each_methods_whole_config(runs):
    lora = read_manifest(runs["llava-lora-connector-T"] / "adapter")
    assert lora["method_config"]["rank"] == 4 and lora["method_config"]["alpha"] == 8
    targets = lora["method_config"]["targets"]
    assert (
        len(targets) == 4 * 7 and "model.language_model.layers.3.mlp.down_proj" in targets
    )  # names, not a count
    assert read_manifest(runs["llava-prefix7"] / "adapter")["method_config"] == {
        "virtual_tokens": 7,
        "projection": True,
    }
    assert read_manifest(runs["llava-ln"] / "adapter")["method_config"] == {"fp32_norms": True}


def test_eval_of_a_prefix_run_with_non_default_tokens_rebuilds_its_prefix(runs, small_demo, capsys):
    """Once a RuntimeError size mismatch: eval rebuilt prefix runs with the default 5 virtual tokens."""
    assert main(["eval", str(runs["llava-prefix7"]), "--dataset", str(small_demo), "--quiet"]) == 0
    assert "global" in capsys.readouterr().out
    built = rebuild_from_manifest(runs["llava-prefix7"] / "adapter")
    table = dict(built.model.named_parameters())["model.language_model.prefix_encoder.embedding.weight"]
    assert table.shape[0] == 7


@pytest.mark.slow
def test_adapters_load_in_plain_peft_with_medtune_loaders_outputs(runs, tmp_path):
    jobs, want, untouched = [], {}, {}
    for name, run in runs.items():
        adapter = run / "adapter"
        assert (adapter / PEFT_WEIGHTS).is_file() and (adapter / "adapter_config.json").is_file()
        built = rebuild_from_manifest(adapter, dtype=torch.float32)
        batch = inputs(built)
        want[name] = medtune_outputs(built, batch)
        untouched[name] = medtune_outputs(load(built.preset, dtype=torch.float32), batch)
        torch.save(batch, tmp_path / f"{name}.in.pt")
        source = read_manifest(adapter)["base_source"]
        jobs.append({"base": source, "adapter": str(adapter), "inputs": str(tmp_path / f"{name}.in.pt"),
                     "out": str(tmp_path / f"{name}.out.pt")})  # fmt: skip
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "jobs.json")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in runs:
        got = torch.load(tmp_path / f"{name}.out.pt")
        assert set(got) == set(want[name])
        for field, tensor in want[name].items():
            torch.testing.assert_close(got[field], tensor, rtol=1e-5, atol=1e-5, msg=f"{name}: {field}")
        field = "logits" if "logits" in want[name] else "loss"
        changed = (untouched[name][field] - want[name][field]).abs().max()
        assert changed > 1e-4, f"{name}: the adapter changed nothing, so equal outputs prove nothing"


def test_a_miss_prefix_adapter_says_why_it_is_not_in_peft_layout_and_still_loads(tmp_path, demo_cache):
    out = tmp_path / "runs"
    assert main(["train", "miss", "prefix", *FAST, "--output-dir", str(out)]) == 0
    (run,) = out.iterdir()
    manifest = read_manifest(run / "adapter")
    assert (
        manifest["format"] == "medtune"
        and "BlipForQuestionAnswering takes none" in manifest["peft_unavailable"]
    )
    assert (run / "adapter" / WEIGHTS).is_file() and not (run / "adapter" / PEFT_WEIGHTS).exists()
    rebuild_from_manifest(run / "adapter")  # loads, fingerprint checked


def test_an_adapter_in_the_older_layout_still_loads(runs, tmp_path):
    """Older adapters: adapter.safetensors under medtune's names, method_details with LoRA's targets as a count."""
    new = rebuild_from_manifest(runs["llava-lora-connector-T"] / "adapter", dtype=torch.float32)
    old = tmp_path / "adapter"
    old.mkdir()
    names = {n for n, p in new.model.named_parameters() if p.requires_grad}
    save_file(tuned_state(new.model, names), str(old / WEIGHTS))
    manifest = read_manifest(runs["llava-lora-connector-T"] / "adapter")
    for key in ("method_config", "format", "peft_type", "medtune_version"):
        del manifest[key]
    manifest["method_details"] = {"rank": 4, "targets": 28, "alpha": 8}
    (old / MANIFEST).write_text(json.dumps(manifest))
    again = rebuild_from_manifest(old, dtype=torch.float32)
    batch = inputs(new)
    torch.testing.assert_close(medtune_outputs(again, batch)["logits"], medtune_outputs(new, batch)["logits"])
