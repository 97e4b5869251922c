import csv
import json

import pytest

from medtune.eval import load_runs, plot_loss, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _make_run(root, name, *, method, paradigm, trainable, global_acc=0.6, scores=True, family="llava"):
    run = root / name
    run.mkdir(parents=True)
    groups = ["vision_tower", "connector", "llm", "lm_head"] if family == "llava" else ["vit", "jtm", "dec"]
    config = {
        "family": family,
        "preset": "tiny-llava" if family == "llava" else "tiny-miss",
        "method": method,
        "paradigm": paradigm,
        "groups": groups,
        "dataset": {"source": "demo", "name": "slake", "split": "test"},
        "params": {
            "total": 1_000_000,
            "trainable": trainable,
            "peft": trainable,
            "groups": {g: {"params": 250_000} for g in groups},
        },
    }
    (run / "config.json").write_text(json.dumps(config))
    lines = [
        {"step": s, "epoch": s / 10, "loss": 2.0 / (s + 1), "lr": 1e-4, "seconds": s, "tokens_per_s": 9.0}
        for s in range(5)
    ]
    lines.insert(3, {"step": 3, "epoch": 0.3, "val_loss": 1.5})
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if scores:
        merged = {
            "open": 0.5,
            "closed": 0.75,
            "global": global_acc,
            "global_exact": 0.4,
            "n_open": 2,
            "n_closed": 4,
            "scorer_version": "medtune-vqa-1",
            "meteor": 0.1234,
            "meteor_variant": "exact+stem",
            "rougeL_recall": 0.2,
            "rougeL_precision": 0.1,
            "rougeL_f1": 0.1333,
            "mean_tokens": 12.5,
            "mean_tokens_unit": "whitespace",
            "bertscore_skipped": "no local encoder",
            "dataset": "slake",
            "split": "test",
        }
        (run / "scores.json").write_text(json.dumps(merged))
        (run / "predictions.jsonl").write_text("")
    return run


def test_report_tables_columns_and_figures(tmp_path, capsys):
    runs = tmp_path / "runs"
    ln = _make_run(runs, "r1-llava-ln", method="ln", paradigm="F,F,PEFT,F", trainable=262)
    lora = _make_run(
        runs, "r2-llava-lora", method="lora", paradigm="F,T,PEFT,T", trainable=9_994, global_acc=0.5
    )
    miss = _make_run(runs, "r3-miss-ln", method="ln", paradigm="T,PEFT,T", trainable=500_000, family="miss")
    pending = _make_run(runs, "r4-llava-ffn", method="ffn", paradigm="F,F,PEFT,F", trainable=1, scores=False)
    ood = ln / "eval-vqa-rad-test"
    ood.mkdir()
    (ood / "scores.json").write_text(
        json.dumps({"open": 0.25, "closed": 1.0, "global": 0.5, "dataset": "vqa-rad", "split": "test"})
    )

    written = write_report([ln, lora, miss, pending], tmp_path / "out")
    out = tmp_path / "out"
    names = {p.relative_to(out).as_posix() for p in written}
    assert {
        "report.md",
        "slake-test-tiny-llava/table.md",
        "slake-test-tiny-llava/table.csv",
        "slake-test-tiny-llava/loss_curves.png",
        "slake-test-tiny-llava/accuracy_vs_params.png",
        "slake-test-tiny-miss/table.csv",
        "vqa-rad-test-tiny-llava/table.csv",
    } <= names
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC

    with (out / "slake-test-tiny-llava" / "table.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["Run"] for row in table] == ["r1-llava-ln", "r2-llava-lora"]
    assert list(table[0])[:5] == ["Run", "Vision Tower", "Connector", "LLM", "LM head"]
    assert [table[0][g] for g in ("Vision Tower", "Connector", "LLM", "LM head")] == [
        "F",
        "F",
        "LayerNorm",
        "F",
    ]
    assert [table[1][g] for g in ("Vision Tower", "Connector", "LLM", "LM head")] == ["F", "T", "LoRA", "T"]
    assert float(table[0]["Global (%)"]) == pytest.approx(60.0)
    assert float(table[1]["#Params (%)"]) == pytest.approx(0.9994)
    assert table[0]["Trainable Params"] == "262"
    # #PEFT Params is relative to the PEFT groups (here the llm: 250,000 parameters), as in Table 1
    assert float(table[0]["#PEFT Params (%)"]) == pytest.approx(100 * 262 / 250_000)
    # the paper's column order; BERTScore was skipped by every run, so its columns are omitted
    headers = list(table[0])[5:]
    assert headers == [
        "Opened (%)",
        "Closed (%)",
        "Global (%)",
        "Global exact (%)",
        "METEOR (%)",
        "ROUGE-L R (%)",
        "ROUGE-L P (%)",
        "ROUGE-L F1 (%)",
        "Mean Token",
        "Trainable Params",
        "#Params (%)",
        "PEFT Params",
        "#PEFT Params (%)",
    ]
    miss_table = (out / "slake-test-tiny-miss" / "table.md").read_text()
    assert "| ViT | JTM | DEC |" in miss_table and "| T | LayerNorm | T |" in miss_table
    ood_table = (out / "vqa-rad-test-tiny-llava" / "table.csv").read_text().splitlines()
    assert ood_table[0].startswith(
        "Run,Vision Tower,Connector,LLM,LM head,Opened (%),Closed (%),Global (%),Trainable"
    )
    assert ood_table[1].startswith("r1-llava-ln/eval-vqa-rad-test,F,F,LayerNorm,F,25.0000,100.0000,50.0000")

    report = (out / "report.md").read_text()
    assert "| r1-llava-ln | F | F | LayerNorm | F | 50.00 | 75.00 | 60.00 |" in report
    assert "0.0262" in report  # 262 / 1e6 in %, printed with significant digits
    sentence = f"Run directory {pending} has no scores.json"
    assert sentence in report and sentence in capsys.readouterr().err
    assert "BERTScore skipped: no local encoder" in report


def test_run_without_config_or_scores_is_named(tmp_path):
    (tmp_path / "not-a-run").mkdir()
    rows, problems = load_runs([tmp_path / "not-a-run", tmp_path / "missing"])
    assert rows == []
    assert problems == [
        f"{tmp_path / 'not-a-run'} has no config.json, so it is not a medtune run directory; it is left out of the report.",
        f"{tmp_path / 'missing'} is not a directory; pass run directories such as runs/<run>.",
    ]
    pending = _make_run(tmp_path, "pending", method="ln", paradigm="F,F,PEFT,F", trainable=1, scores=False)
    with pytest.raises(ValueError, match="has scores to report"):
        write_report([pending], tmp_path / "out")


def test_paradigm_must_match_groups(tmp_path):
    run = _make_run(tmp_path, "bad", method="ln", paradigm="F,PEFT", trainable=1)
    with pytest.raises(
        ValueError, match=r"config.json field 'paradigm' is 'F,PEFT' with 2 states.*4 module groups"
    ):
        load_runs([run])


def test_plot_loss_draws_one_run(tmp_path):
    run = _make_run(tmp_path, "r", method="ln", paradigm="F,F,PEFT,F", trainable=1)
    out = plot_loss(run / "metrics.jsonl", run / "loss.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 2 is not valid JSON"):
        plot_loss(run / "metrics.jsonl", run / "loss.png")
