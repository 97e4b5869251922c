"""`export --merge` streams: equal to the in-memory merge tensor for tensor, one tensor in memory at a time.

The llava bases are a fresh tiny model saved with save_pretrained in fp16 as 200 KB shards (today's tensor names);
the miss runs use the bundled demo weights (a single file under the older names transformers renames on load).
"""

from __future__ import annotations

import json
import shutil
import weakref
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from medtune.core_models import build_random, get_preset, load
from medtune.data import demo_dataset, read_vqa
from medtune.tuning import export as export_module
from medtune.tuning import merge_stream
from medtune.tuning.cli import main
from medtune.tuning.export import export_merged

FAST = ["--no-eval-before", "--no-eval", "--quiet", "--batch-size", "2", "--max-steps", "2", "--lr", "0.05"]
# id: family, method, extra train flags, base ("sharded": the fresh fp16 shards; "demo": the bundled weights)
RUNS = {
    "llava-ln": ("llava", "ln", [], "sharded"),
    "llava-lora": ("llava", "lora", [], "sharded"),
    "llava-ffn": ("llava", "ffn", [], "sharded"),
    "llava-T-connector": ("llava", "ln", ["--paradigm", "F,T,PEFT,F"], "sharded"),
    "miss-ln-T-vit-dec": ("miss", "ln", [], "demo"),  # miss's default paradigm T,PEFT,T
    "miss-lora": ("miss", "lora", [], "demo"),
}
NON_WEIGHT_FILES = ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json")


@pytest.fixture(scope="module")
def sharded_base(tmp_path_factory):
    """Return a tiny-llava checkpoint folder: fp16, save_pretrained's shards and index, its tokenizer."""
    folder = tmp_path_factory.mktemp("bases") / "tiny-llava-sharded"
    torch.manual_seed(0)
    build_random("tiny-llava", dtype=torch.float16).save_pretrained(folder, max_shard_size="200KB")
    for name in NON_WEIGHT_FILES:
        shutil.copy(get_preset("tiny-llava").default_weights / name, folder / name)
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_cache, sharded_base):
    """Return a function giving the run directory of a RUNS id, training it on first use."""
    root = tmp_path_factory.mktemp("stream-runs")
    done = {}

    def run(key: str):
        if key not in done:
            family, method, flags, base = RUNS[key]
            where = ["--model-path", str(sharded_base)] if base == "sharded" else []
            out = root / key
            assert main(["train", family, method, *FAST, *flags, *where, "--output-dir", str(out)]) == 0
            (done[key],) = out.iterdir()
        return done[key]

    return run


def saved_tensors(folder) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))  # safetensors' own reader: the streamed files are valid
    return tensors


@pytest.mark.slow
@pytest.mark.parametrize("key", list(RUNS))
def test_streamed_export_equals_the_in_memory_export(key, runs, tmp_path, capsys):
    run = runs(key)
    streamed, in_memory = tmp_path / "streamed", tmp_path / "in-memory"
    capsys.readouterr()
    export_merged(run / "adapter", streamed, max_shard_size="200KB")
    assert "merged tensor by tensor" in capsys.readouterr().out
    export_merged(run / "adapter", in_memory, max_shard_size="200KB", stream=False)
    assert "merged in memory" in capsys.readouterr().out

    assert sorted(p.name for p in streamed.iterdir()) == sorted(p.name for p in in_memory.iterdir())
    for name in ("config.json", "generation_config.json", "model.safetensors.index.json"):
        if (in_memory / name).is_file():  # the index: same shards, same tensor names in each
            assert json.loads((streamed / name).read_text()) == json.loads((in_memory / name).read_text())
    got, want = saved_tensors(streamed), saved_tensors(in_memory)
    assert list(got) and set(got) == set(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), name  # bit for bit: LoRA too (both merge in fp32, round once)
    assert {t.dtype for t in got.values() if t.is_floating_point()} == {torch.float16}  # the base's own

    source = Path(json.loads((run / "adapter" / "manifest.json").read_text())["base_source"])
    untouched = saved_tensors(source)
    assert set(untouched) == set(got)  # the base's names: what the checkpoint was loaded from
    changed = [n for n in got if not torch.equal(got[n], untouched[n])]
    assert changed, "the adapter changed nothing, so the equality above would mean nothing"


def test_streamed_export_holds_one_tensor_at_a_time_and_builds_no_model(runs, tmp_path, monkeypatch, capsys):
    run = runs("llava-lora")
    live: dict[int, int] = {}
    peak = {"bytes": 0, "tensors": 0, "made": 0}

    def counted(produce):
        def wrapper(*args, **kwargs):
            tensor = produce(*args, **kwargs)
            key = peak["made"] = peak["made"] + 1
            live[key] = tensor.numel() * tensor.element_size()
            weakref.finalize(tensor, live.pop, key, None)
            peak["bytes"] = max(peak["bytes"], sum(live.values()))
            peak["tensors"] = max(peak["tensors"], len(live))
            return tensor

        return wrapper

    def refuse(*args, **kwargs):
        raise AssertionError("the streamed export built a model with real weights")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(export_module, "merged_model", refuse)
    monkeypatch.setattr(merge_stream, "read_stored", counted(merge_stream.read_stored))
    monkeypatch.setattr(merge_stream, "merged_tensor", counted(merge_stream.merged_tensor))
    out = tmp_path / "merged"
    export_merged(run / "adapter", out)  # the default 5GB shards: the whole model in one file
    assert "one tensor in memory at a time" in capsys.readouterr().out
    monkeypatch.undo()

    tensors = saved_tensors(out)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    largest = max(t.numel() * t.element_size() for t in tensors.values())
    assert len(list(out.glob("*.safetensors"))) == 1 and peak["made"] > len(tensors)  # every read was seen
    # In flight at most: a base weight, its two LoRA factors and the merged weight (the last one written is gone).
    assert peak["tensors"] <= 4
    assert peak["bytes"] <= 2 * largest + 64 * 1024
    assert peak["bytes"] < total / 8, (peak, total)


def test_export_loads_in_transformers_alone_with_medtune_s_logits(model_logits, runs, tmp_path, demo_cache):
    run = runs("llava-lora")
    out = tmp_path / "merged"
    export_merged(run / "adapter", out, max_shard_size="200KB")
    records = read_vqa(demo_dataset("downstream"), "test")[:2]
    ours = load("tiny-llava", out)
    served = transformers.AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    assert type(served) is type(ours.model)
    theirs = load("tiny-llava", out)
    theirs.model = served
    want, got = model_logits(ours, records), model_logits(theirs, records)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    base = load("tiny-llava", json.loads((run / "adapter" / "manifest.json").read_text())["base_source"])
    assert (
        got - model_logits(base, records)
    ).abs().max() > 1e-3  # the merged adapter is in what transformers serves


def test_a_bin_base_merges_in_memory_and_says_why(runs, sharded_base, tmp_path, capsys):
    run = runs("llava-ln")
    as_bin = tmp_path / "bin-base"
    shutil.copytree(sharded_base, as_bin, ignore=shutil.ignore_patterns("model*.safetensors*"))
    torch.save(saved_tensors(sharded_base), as_bin / "pytorch_model.bin")
    capsys.readouterr()
    out = tmp_path / "from-bin"
    assert main(["export", str(run), "--merge", "--out", str(out), "--model-path", str(as_bin)]) == 0
    said = capsys.readouterr().out
    assert "merged in memory" in said and "not safetensors" in said
    streamed = tmp_path / "streamed"
    export_merged(run / "adapter", streamed, str(sharded_base))
    got, want = saved_tensors(out), saved_tensors(streamed)
    assert set(got) == set(want) and all(torch.equal(got[n], want[n]) for n in want)


def test_streamed_export_refuses_another_base_a_truncated_shard_and_a_bad_shard_size(
    runs, sharded_base, tmp_path, capsys
):
    run = runs("llava-ln")
    other = tmp_path / "other-base"
    shutil.copytree(sharded_base, other)
    index = json.loads((other / "model.safetensors.index.json").read_text())["weight_map"]
    name = next(n for n in index if "mlp.up_proj" in n)
    shard = other / index[name]
    tensors = load_file(str(shard))
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, str(shard), metadata={"format": "pt"})
    out = tmp_path / "merged"
    assert main(["export", str(run), "--merge", "--out", str(out), "--model-path", str(other)]) == 2
    assert "was made for another base model" in capsys.readouterr().err
    assert not out.exists() and not any(p.name.startswith(".merged") for p in tmp_path.iterdir())

    cut = tmp_path / "cut-base"
    shutil.copytree(sharded_base, cut)
    last = sorted(cut.glob("model-*.safetensors"))[-1]
    last.write_bytes(last.read_bytes()[:-100])
    assert main(["export", str(run), "--merge", "--out", str(out), "--model-path", str(cut)]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and last.name in err
    assert not out.exists()

    assert main(["export", str(run), "--merge", "--out", str(out), "--max-shard-size", "lots"]) == 2
    assert "--max-shard-size 'lots' is not a size" in capsys.readouterr().err
    assert not out.exists()
