"""Report generation trains and evaluates through the same command (the paper's OpenI -> MIMIC setting)."""

from __future__ import annotations

import json

from PIL import Image

from medtune.tuning.cli import main

REPORTS = [
    "the heart is normal in size . the lungs are clear .",
    "no acute cardiopulmonary abnormality . the lungs are clear .",
    "heart size is normal . no focal consolidation .",
]


def write_iu_xray(root):
    """An R2Gen iu_xray annotation.json with two views per study under images/."""
    data = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        rows = []
        for i in range(n):
            study = f"CXR{split}{i}"
            paths = []
            for view in (0, 1):
                path = root / "images" / study / f"{view}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (48, 48), color=40 * (i + view) % 255).save(path)
                paths.append(f"{study}/{view}.png")
            rows.append({"id": study, "report": REPORTS[i % 3], "image_path": paths, "split": split})
        data[split] = rows
    (root / "annotation.json").write_text(json.dumps(data))
    return root


def test_train_and_eval_on_a_report_dataset(tmp_path, capsys):
    data = write_iu_xray(tmp_path / "iu_xray")
    runs = tmp_path / "runs"
    argv = ["train", "llava", "ln", "--dataset", str(data), "--max-steps", "2", "--max-new-tokens", "6"]
    assert main([*argv, "--no-eval-before", "--quiet", "--output-dir", str(runs)]) == 0
    assert "METEOR" in capsys.readouterr().out
    (run,) = runs.iterdir()
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"]["task"] == "report"
    scores = json.loads((run / "scores.json").read_text())
    assert "global" not in scores and 0 <= scores["meteor"] <= 1 and 0 <= scores["rougeL_f1"] <= 1
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [r["qid"] for r in rows] == ["CXRtest0", "CXRtest1", "CXRtest2"]
    assert rows[0]["question"] == "Describe the given chest x-ray image in detail."
    assert main(["eval", str(run), "--dataset", str(data), "--max-new-tokens", "4", "--quiet"]) == 0
    assert (run / "eval-iu_xray-test" / "scores.json").is_file()


def test_a_report_dataset_refuses_the_vqa_task(tmp_path, capsys):
    data = write_iu_xray(tmp_path / "iu_xray")
    argv = [
        "train",
        "llava",
        "ln",
        "--dataset",
        str(data),
        "--task",
        "vqa",
        "--output-dir",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2
    assert "as a VQA dataset (--task vqa)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
