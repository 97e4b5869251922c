"""A merged export serves with transformers alone and answers as `medtune predict` does; predict and base eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from medtune.core_models import load
from medtune.data import demo_dataset, read_vqa
from medtune.tuning.batches import make_collator
from medtune.tuning.cli import main

FAST = ["--no-eval-before", "--no-eval", "--quiet", "--batch-size", "2", "--max-steps", "2"]
SCRIPT = Path(__file__).with_name("serve_export.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_cache) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-runs")
    found = {}
    for family, method, flags in (("llava", "lora", ["--lr", "0.05"]), ("miss", "ln", [])):
        assert main(["train", family, method, *FAST, *flags, "--output-dir", str(root / family)]) == 0
        (found[family],) = (root / family).iterdir()
    return found


@pytest.fixture(scope="module")
def asked(tmp_path_factory, demo_cache) -> Path:
    """A --input file of three demo test questions (image paths relative to the file, as a user writes them)."""
    records = read_vqa(demo_dataset("downstream"), "test")[:3]
    file = tmp_path_factory.mktemp("asked") / "asked.jsonl"
    file.write_text("".join(json.dumps({"image": os.path.relpath(r.image, file.parent), "question": r.question})
                            + "\n" for r in records))  # fmt: skip
    return file


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava", "miss"])
def test_export_serves_with_transformers_alone_and_answers_like_predict(
    family, runs, asked, tmp_path, capsys
):
    export = tmp_path / "export"
    assert (
        main(["export", str(runs[family]), "--merge", "--out", str(export), "--max-shard-size", "200KB"]) == 0
    )
    index = json.loads((export / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    with safe_open(str(export / shards[0]), "pt") as f:  # the base's own precision (tiny bases are fp16)
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}  # noqa: SIM118
    assert "| method |" in (export / "README.md").read_text()

    predicted = tmp_path / "predicted.jsonl"
    assert (
        main(["predict", str(runs[family]), "--input", str(asked), "--out", str(predicted), "--quiet"]) == 0
    )
    by_run = [json.loads(line) for line in predicted.read_text().splitlines()]
    assert len(by_run) == 3 and all(row["answer"] for row in by_run)
    # One question per batch, as the served model gets them: BLIP-VQA's answers change with a batch's padding.
    argv = ["predict", "--model-path", str(export), "--preset", f"tiny-{family}", "--input", str(asked),
            "--batch-size", "1"]  # fmt: skip
    assert main([*argv, "--out", str(predicted), "--quiet"]) == 0
    want = [json.loads(line) for line in predicted.read_text().splitlines()]
    dtype = str(load(f"tiny-{family}", export).model.dtype).removeprefix("torch.")  # as medtune loads it
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"image": row["image"], "question": row["question"]} for row in want]))
    done = subprocess.run([sys.executable, str(SCRIPT), str(export), dtype, str(jobs), str(tmp_path / "served.json")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads((tmp_path / "served.json").read_text())
    assert served[0]["processor"] == ("BlipProcessor" if family == "miss" else "LlavaProcessor")
    assert [s["answer"] for s in served] == [w["answer"] for w in want]
    assert all(w["answer"] for w in want)  # something was generated, so equality above means something

    built = load(f"tiny-{family}", export)  # medtune's own collator builds exactly the processor's prompt
    batch = make_collator(built, train=False)(read_vqa(demo_dataset("downstream"), "test")[:1])
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert served[0]["prompt_ids"] == ids


def test_predict_prints_one_answer_and_answers_zero_shot_with_a_base_alone(runs, asked, capsys):
    row = json.loads(asked.read_text().splitlines()[0])
    image = str(asked.parent / row["image"])
    assert (
        main(["predict", str(runs["llava"]), "--image", image, "--question", row["question"], "--quiet"]) == 0
    )
    tuned = capsys.readouterr().out.strip().splitlines()[-1]
    base = load("tiny-llava").source
    assert (
        main(["predict", "--model-path", base, "--image", image, "--question", row["question"], "--quiet"])
        == 0
    )
    zero_shot = capsys.readouterr().out.strip().splitlines()[-1]
    assert tuned and zero_shot


def test_eval_with_a_model_path_alone_scores_the_untuned_base(tmp_path, small_demo, capsys):
    out = tmp_path / "base-scores"
    base = load("tiny-miss").source
    dataset = str(small_demo)
    assert main(["eval", "--model-path", base, "--dataset", dataset, "--out", str(out), "--quiet"]) == 0
    assert "(untuned)" in capsys.readouterr().out
    scores = json.loads((out / "scores.json").read_text())
    assert scores["n_open"] + scores["n_closed"] == len(json.loads((small_demo / "test.json").read_text()))


def test_export_refuses_a_non_empty_folder_unless_forced(runs, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["export", str(runs["miss"]), "--merge", "--out", str(tmp_path)]) == 2
    assert "pass --force" in capsys.readouterr().err and (tmp_path / "keep.txt").read_text() == "mine"
    assert main(["export", str(runs["miss"]), "--merge", "--out", str(tmp_path), "--force"]) == 0
    assert not (tmp_path / "keep.txt").exists() and (tmp_path / "config.json").is_file()
