"""End to end across packages: `medtune train` on the demo writes the run directory DESIGN.md describes."""

from __future__ import annotations

import json

import pytest

from medtune.core_models import load
from medtune.data import demo_dataset, read_vqa
from medtune.tuning.adapter import read_adapter_state
from medtune.tuning.cli import main

LLM = "model.language_model"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    argv = [
        "train",
        "llava",
        "ln",
        "--max-steps",
        "4",
        "--log-every",
        "2",
        "--no-eval-before",
        "--quiet",
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 0
    (run,) = out.iterdir()
    return run


def test_run_directory_holds_every_file(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.json",
        "metrics.jsonl",
        "adapter",
        "predictions.jsonl",
        "scores.json",
        "loss.png",
    } <= names
    assert run_dir.name.endswith("-llava-ln")
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_is_fully_resolved(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["family"], config["method"], config["preset"], config["paradigm"]) == (
        "llava",
        "ln",
        "tiny-llava",
        "F,F,PEFT,F",
    )
    assert config["groups"] == ["vision_tower", "connector", "llm", "lm_head"]
    assert config["max_steps"] == 4 and config["recipe"] == "demo" and config["lr"] > 0
    assert config["params"]["trainable"] == config["params"]["peft"] == 9 * 192


def test_metrics_log_every_logged_step(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    for row in rows:
        assert {"step", "epoch", "loss", "lr", "seconds", "tokens_per_s"} <= set(row)
        assert row["loss"] > 0 and row["tokens_per_s"] > 0


def test_adapter_holds_exactly_the_tuned_norms(run_dir):
    state = read_adapter_state(run_dir / "adapter")
    expected = {f"{LLM}.norm.weight"} | {
        f"{LLM}.layers.{i}.{n}.weight"
        for i in range(4)
        for n in ("input_layernorm", "post_attention_layernorm")
    }
    assert set(state) == expected
    manifest = json.loads((run_dir / "adapter" / "manifest.json").read_text())
    assert (
        manifest["preset"] == "tiny-llava"
        and manifest["method"] == "ln"
        and manifest["paradigm"] == "F,F,PEFT,F"
    )
    assert len(manifest["base_fingerprint"]) == 16
    # The tuned norms moved away from the base's values.
    base = load("tiny-llava").model
    assert not all(state[n].equal(dict(base.named_parameters())[n]) for n in expected)


def test_predictions_and_scores_cover_the_whole_test_split(run_dir):
    records = read_vqa(demo_dataset("downstream"), "test")
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [r["qid"] for r in rows] == [r.qid for r in records]
    assert {"qid", "question", "answer", "prediction", "answer_type", "n_tokens"} <= set(rows[0])
    scores = json.loads((run_dir / "scores.json").read_text())
    assert scores["n_open"] + scores["n_closed"] == len(records)
    assert 0 <= scores["global"] <= 1 and "scorer_version" in scores


def test_eval_and_report_commands_read_the_run(run_dir, tmp_path):
    assert main(["eval", str(run_dir), "--dataset", str(demo_dataset("downstream")), "--quiet"]) == 0
    scores = json.loads(
        (run_dir / f"eval-{demo_dataset('downstream').name}-test" / "scores.json").read_text()
    )
    ours = json.loads((run_dir / "scores.json").read_text())
    assert scores["global"] == pytest.approx(ours["global"])  # same adapter, same data, greedy: same answers
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").read_text().count("LayerNorm") >= 1


def test_miss_demo_trains_and_scores_with_its_bundled_base(tmp_path):
    argv = ["train", "miss", "ln", "--max-steps", "2", "--log-every", "1", "--no-eval-before", "--quiet"]
    assert main([*argv, "--output-dir", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    config = json.loads((run / "config.json").read_text())
    assert (config["preset"], config["paradigm"], config["groups"]) == (
        "tiny-miss",
        "T,PEFT,T",
        ["vit", "jtm", "dec"],
    )
    state = read_adapter_state(run / "adapter")
    # T,PEFT,T: the whole ViT and decoder train, and only the norms of the joint encoder.
    jtm = {n for n in state if n.startswith("text_encoder.")}
    assert jtm and all("LayerNorm" in n or "layer_norm" in n or "layernorm" in n for n in jtm)
    assert any(n.startswith("vision_model.") for n in state) and any(
        n.startswith("text_decoder.") for n in state
    )
    scores = json.loads((run / "scores.json").read_text())
    assert scores["n_open"] + scores["n_closed"] == len(read_vqa(demo_dataset("downstream"), "test"))
