"""--on-invalid: a bad record stops train/eval with a sentence (raise) or is skipped and listed (report)."""

from __future__ import annotations

import json
import shutil

import pytest

from medtune.data import demo_dataset
from medtune.tuning.cli import main

FAST = ["--no-eval-before", "--no-eval", "--quiet", "--batch-size", "2", "--max-steps", "1"]


@pytest.fixture
def broken(tmp_path, demo_cache):
    """Return (Slake-layout copy of the demo set with one train and one test image deleted, their names)."""
    root = tmp_path / "Slake1.0"
    shutil.copytree(demo_dataset("downstream"), root)
    gone = []
    for split in ("train", "test"):
        name = json.loads((root / f"{split}.json").read_text())[0]["img_name"]
        (root / "imgs" / name).unlink()
        gone.append(name)
    return root, gone


def test_train_raise_mode_names_the_file_and_record_and_writes_nothing(broken, tmp_path, capsys):
    root, (train_image, _) = broken
    out = tmp_path / "runs"
    assert main(["train", "llava", "ln", "--dataset", str(root), *FAST, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'train.json'}, record 0" in err and "field 'image'" in err and train_image in err
    assert "--on-invalid report" in err
    assert not out.exists()


def test_train_report_mode_trains_and_lists_every_rejected_record(broken, tmp_path, capsys):
    root, (train_image, _) = broken
    out = tmp_path / "runs"
    argv = ["train", "llava", "ln", "--dataset", str(root), *FAST, "--on-invalid", "report"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    (run,) = out.iterdir()
    rows = [json.loads(line) for line in (run / "rejected.jsonl").read_text().splitlines()]
    using = [
        i for i, r in enumerate(json.loads((root / "train.json").read_text())) if r["img_name"] == train_image
    ]
    assert [r["index"] for r in rows] == using and len(using) >= 1
    assert all(r["field"] == "image" and r["file"] == str(root / "train.json") for r in rows)
    assert f"rejected {len(using)} invalid record(s)" in capsys.readouterr().out
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_eval_raise_and_report_modes(broken, tmp_path, capsys):
    root, (_, test_image) = broken
    out = tmp_path / "runs"
    assert main(["train", "llava", "ln", *FAST, "--output-dir", str(out)]) == 0
    (run,) = out.iterdir()
    argv = ["eval", str(run), "--dataset", str(root), "--quiet", "--max-new-tokens", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{root / 'test.json'}, record 0" in err and test_image in err
    assert main([*argv, "--on-invalid", "report"]) == 0
    (listed,) = run.glob("*/rejected.jsonl")
    rows = [json.loads(line) for line in listed.read_text().splitlines()]
    assert rows and rows[0]["index"] == 0 and all(test_image in r["reason"] for r in rows)
    assert f"rejected {len(rows)} invalid record(s)" in capsys.readouterr().out
