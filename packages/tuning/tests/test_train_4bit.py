"""`medtune train --4bit` scores the quantised model before and after tuning; `--dtype` picks the frozen dtype."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medtune.data import demo_dataset
from medtune.tuning.cli import main

pytest.importorskip("bitsandbytes", reason="--4bit needs bitsandbytes")


@pytest.fixture(scope="module")
def small_demo(demo_cache, tmp_path_factory):
    """The demo data in its Slake layout with 32 training and 12 test questions (scoring stays fast)."""
    source = demo_dataset("downstream")
    folder = tmp_path_factory.mktemp("slake-small")
    (folder / "imgs").symlink_to(source / "imgs")
    for split, keep in (("train", 32), ("test", 12), ("validate", 8)):
        records = json.loads((source / f"{split}.json").read_text())
        (folder / f"{split}.json").write_text(json.dumps(records[:keep]))
    return folder


def test_4bit_run_scores_the_quantised_model_before_and_after(small_demo, tmp_path, capsys):
    argv = ["train", "llava", "ln", "--4bit", "--max-steps", "2", "--batch-size", "4", "--quiet"]
    assert main([*argv, "--dataset", str(small_demo), "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "48 frozen linear layers now NF4 (quantised as they loaded)" in out
    assert out.index("before tuning:") < out.index("ln under F,F,PEFT,F")  # scored before the method applied
    (run,) = tmp_path.iterdir()
    before = json.loads((run / "scores_before.json").read_text())
    after = json.loads((run / "scores.json").read_text())
    for scores in (before, after):
        assert scores["n_open"] + scores["n_closed"] == 12
    config = json.loads((run / "config.json").read_text())
    assert config["load_4bit"] and config["load_dtype"] == "float32"
    memory = config["memory"]
    assert memory["measured_by"] == "peak RSS" and memory["measured_peak_bytes"] > 100 * 2**20
    assert 0 < memory["planned_load_peak_bytes"] <= memory["planned_peak_bytes"]
    # the process before loading (interpreter, libraries), which the plan's tensors leave out
    assert 0 < memory["measured_before_load_bytes"] < memory["measured_load_peak_bytes"]
    assert "GiB of it before loading), " in out


def test_bf16_on_the_cpu_loads_bf16_and_fp16_is_refused_before_anything_is_written(
    small_demo, tmp_path, capsys
):
    argv = ["train", "llava", "ln", "--max-steps", "1", "--batch-size", "4", "--no-eval-before", "--no-eval"]
    common = ["--dataset", str(small_demo), "--quiet"]
    # Its own process: accelerate keeps one mixed-precision setting per process (bf16 autocast here).
    done = subprocess.run(
        [sys.executable, "-m", "medtune.tuning.cli", *argv, *common, "--dtype", "bf16", "--output-dir",
         str(tmp_path / "bf16")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (tmp_path / "bf16").iterdir()
    assert json.loads((run / "config.json").read_text())["load_dtype"] == "bfloat16"
    assert main([*argv, *common, "--dtype", "fp16", "--output-dir", str(tmp_path / "fp16")]) == 2
    err = capsys.readouterr().err
    assert "--dtype fp16 trains only on a GPU" in err and err.count("\n") == 1
    assert not (tmp_path / "fp16").exists()


def test_a_truncated_shard_stops_train_with_one_sentence_before_the_run_directory(tmp_path, capsys):
    from medtune.core_models import get_preset
    from medtune.core_models.model_class import build_model

    demo = get_preset("tiny-llava").default_weights
    folder = tmp_path / "ckpt"
    build_model("tiny-llava").save_pretrained(folder, max_shard_size="2MB")
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (folder / name).write_bytes((demo / name).read_bytes())
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-4096])
    capsys.readouterr()
    argv = [
        "train",
        "llava",
        "ln",
        "--4bit",
        "--model-path",
        str(folder),
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    assert main([*argv, "--quiet"]) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "truncated" in ln]
    assert line.startswith("medtune train: error: ") and f"{shard.name} is truncated: tensor " in line
    assert not (tmp_path / "runs").exists()


def test_params_memory_reports_the_load_peak_beside_the_step(capsys):
    argv = ["params", "llava", "ln", "--preset", "llava-med-v1.5", "--4bit", "--memory", "--json"]
    assert main(argv) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    # NF4 weights plus the largest tensor in flight: about 4 GB for the 7B model, under its training step
    assert 3 * 2**30 < memory["load_peak"] < memory["total"] == memory["peak"]
