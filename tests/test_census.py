"""The bad-input census through `medtune train`: each case ends in one sentence and exit 2, or trains.

Every case runs on a small copy of the demo data (Slake layout), with --max-steps 1 and no scoring, under a
timeout, so a case that used to spin forever fails here instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from medtune.data import demo_dataset
from medtune.tuning.cli import main

FAST = ["--no-eval-before", "--no-eval", "--quiet", "--batch-size", "2", "--max-steps", "1"]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def slake(tmp_path) -> Path:
    """Return a copy of the demo Slake folder cut to 6 train and 4 test questions."""
    root = tmp_path / "Slake1.0"
    shutil.copytree(demo_dataset("downstream"), root)
    for split, n in (("train", 6), ("test", 4), ("validate", 4)):
        rows = json.loads((root / f"{split}.json").read_text())[:n]
        (root / f"{split}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return root


def rows(root: Path, split: str = "train") -> list:
    return json.loads((root / f"{split}.json").read_text())


def put(root: Path, content, split: str = "train") -> None:
    data = content if isinstance(content, bytes) else json.dumps(content, ensure_ascii=False).encode()
    (root / f"{split}.json").write_bytes(data)


def train(root: Path, tmp_path: Path, *extra: str) -> int:
    return main(
        [
            "train",
            "llava",
            "ln",
            "--dataset",
            str(root),
            *FAST,
            "--output-dir",
            str(tmp_path / "runs"),
            *extra,
        ]
    )


def refused(capsys, *words: str) -> str:
    """Assert the last command printed one error sentence holding every word, and no traceback."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "medtune train: error:" in captured.err, captured.err
    for word in words:
        assert word in captured.err, f"{word!r} not in {captured.err!r}"
    return captured.err


# --- the eight hangs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["raise", "report"])
def test_empty_train_split_stops_at_once(slake, tmp_path, capsys, mode):
    put(slake, [])
    assert train(slake, tmp_path, "--on-invalid", mode) == 2
    refused(capsys, str(slake / "train.json"), "the train split is empty: the file holds no records")
    assert not (tmp_path / "runs").exists()


def test_chinese_only_train_split_names_the_language_filter(slake, tmp_path, capsys):
    put(slake, [{**r, "q_lang": "zh"} for r in rows(slake)])
    assert train(slake, tmp_path) == 2
    refused(capsys, str(slake / "train.json"), "6 have q_lang 'zh'")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"[{", "is not valid JSON"),
        (b'{"rows": []}', "the top level is a JSON object"),
    ],
)
@pytest.mark.parametrize("mode", ["raise", "report"])
def test_whole_bad_file_is_one_sentence_without_the_report_hint(
    slake, tmp_path, capsys, content, words, mode
):
    put(slake, content)
    assert train(slake, tmp_path, "--on-invalid", mode) == 2
    err = refused(capsys, str(slake / "train.json"), words)
    assert "--on-invalid report" not in err  # it would not help: the file is not one record
    assert "rejected 1 invalid record" not in err


def test_only_bad_records_in_report_mode_counts_them_all(slake, tmp_path, capsys):
    put(slake, [{**r, "answer_type": "MAYBE"} for r in rows(slake)])
    assert train(slake, tmp_path, "--on-invalid", "report") == 2
    refused(capsys, "of its 6 record(s), 6 invalid", "field 'answer_type'")


def test_byte_order_mark_is_read(slake, tmp_path, capsys):
    put(slake, b"\xef\xbb\xbf" + json.dumps(rows(slake)).encode())
    assert train(slake, tmp_path, "--on-invalid", "report") == 0
    assert "6 train" in capsys.readouterr().out


# --- images checked when read -------------------------------------------------------------------------


def test_undecodable_image_is_skipped_and_listed(slake, tmp_path, capsys):
    first = rows(slake)[0]["img_name"]
    (slake / "imgs" / first).write_bytes(os.urandom(1500))
    assert train(slake, tmp_path) == 2
    refused(capsys, "record 0", "field 'image'", "cannot be decoded", "--on-invalid report")
    assert train(slake, tmp_path, "--on-invalid", "report") == 0
    (run,) = (tmp_path / "runs").iterdir()
    listed = [json.loads(line) for line in (run / "rejected.jsonl").read_text().splitlines()]
    using = [k for k, r in enumerate(rows(slake)) if r["img_name"] == first]
    assert [r["index"] for r in listed if r["file"].endswith("train.json")] == using
    assert all(r["field"] == "image" for r in listed)


def test_image_path_outside_the_dataset_is_refused(slake, tmp_path, capsys):
    shutil.copy(slake / "imgs" / rows(slake)[0]["img_name"], tmp_path / "x.jpg")
    put(slake, [{**r, "img_name": "../../x.jpg"} if k == 2 else r for k, r in enumerate(rows(slake))])
    assert train(slake, tmp_path) == 2
    refused(capsys, "record 2", "field 'image'", "lies outside the image folder")


def test_list_answer_is_a_record_error(slake, tmp_path, capsys):
    put(slake, [{**r, "answer": ["a", "b"]} if k == 1 else r for k, r in enumerate(rows(slake))])
    assert train(slake, tmp_path) == 2
    refused(capsys, "record 1", "field 'answer'", "is a JSON list")


# --- layouts the VQA readers do not know: said in VQA words, not the report readers' ---------------------


def test_misspelt_vqarad_file(tmp_path, capsys):
    root = tmp_path / "vqa-rad"
    (root / "VQA_RAD Image Folder").mkdir(parents=True)
    (root / "VQA_RAD Dataset Publc.json").write_text("[]")
    assert train(root, tmp_path) == 2
    refused(capsys, "looks like a misspelt 'VQA_RAD Dataset Public.json'")


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert train(tmp_path / "empty", tmp_path) == 2
    refused(capsys, "the folder is empty", "Slake")


def test_non_utf8_file(slake, tmp_path, capsys):
    put(slake, json.dumps(rows(slake), ensure_ascii=False).replace("brain", "br\u00e4in").encode("latin-1"))
    assert train(slake, tmp_path) == 2
    refused(capsys, "is not UTF-8 text (byte 0xe4")


# --- run directories ---------------------------------------------------------------------------------


def test_output_dir_that_is_a_file(slake, tmp_path, capsys):
    (tmp_path / "runs").write_text("")
    assert train(slake, tmp_path) == 2
    refused(capsys, "is a file, not a folder")


def test_resume_after_a_kill_mid_replace_and_with_changed_data(slake, tmp_path, capsys):
    argv = ["--save-every", "1", "--eval-every", "1"]
    assert train(slake, tmp_path, *argv) == 0
    (run,) = (tmp_path / "runs").iterdir()
    # What kills inside save_adapter / save_checkpoint leave: a complete .old beside each folder, a .tmp.
    for name in ("adapter", "best"):
        shutil.copytree(run / name, run / f".{name}.old")
    shutil.copytree(run / "checkpoint", run / ".checkpoint.tmp")
    original = rows(slake)
    put(slake, original[:5])
    capsys.readouterr()
    assert train(slake, tmp_path, *argv, "--resume", str(run)) == 2
    refused(capsys, "the training data changed since the run started")
    put(slake, original)
    moved = tmp_path / "moved"
    shutil.move(slake, moved)  # the same data elsewhere still resumes: compared by content, not path
    assert train(moved, tmp_path, *argv, "--resume", str(run)) == 0
    assert "removed" in capsys.readouterr().out
    assert not any(p.name.endswith((".old", ".tmp")) for p in run.iterdir())


def test_ctrl_c_after_a_checkpoint_says_how_to_resume(slake, tmp_path, capsys, monkeypatch):
    import medtune.tuning.train as loop

    real = loop.save_checkpoint

    def save_then_interrupt(*args, **kwargs):  # Ctrl-C arriving just after the first checkpoint
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_interrupt)
    assert train(slake, tmp_path, "--save-every", "1", "--max-steps", "3") == 130
    (run,) = (tmp_path / "runs").iterdir()
    assert f"continue the run with the same command plus --resume {run}" in capsys.readouterr().err


def test_resume_of_a_finished_run_without_checkpoints_is_not_called_killed(slake, tmp_path, capsys):
    assert train(slake, tmp_path) == 0
    (run,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    assert train(slake, tmp_path, "--resume", str(run)) == 2
    err = refused(capsys, "the run finished (its adapter is saved)")
    assert "killed" not in err


def test_empty_test_split_stops_before_training(slake, tmp_path, capsys):
    put(slake, [], "test")
    argv = [
        "train",
        "llava",
        "ln",
        "--dataset",
        str(slake),
        "--quiet",
        "--max-steps",
        "1",
        "--no-eval-before",
    ]
    assert main([*argv, "--output-dir", str(tmp_path / "runs")]) == 2
    err = refused(capsys, str(slake / "test.json"), "the test split is empty")
    assert "no predictions to score" not in err
    assert not (tmp_path / "runs").exists()


def test_eval_on_an_empty_test_split(slake, tmp_path, capsys):
    assert train(slake, tmp_path) == 0
    (run,) = (tmp_path / "runs").iterdir()
    put(slake, [{**r, "q_lang": "zh"} for r in rows(slake, "test")], "test")
    capsys.readouterr()
    assert main(["eval", str(run), "--dataset", str(slake), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "the test split is empty" in err and "have q_lang 'zh'" in err


@pytest.mark.parametrize("damage", ["tuned.safetensors", "training_state.pt", "position.json", "config.json"])
def test_hand_damaged_checkpoint_before_resume(slake, tmp_path, capsys, damage):
    assert train(slake, tmp_path, "--save-every", "1") == 0
    (run,) = (tmp_path / "runs").iterdir()
    file = run / damage if damage == "config.json" else run / "checkpoint" / damage
    file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])
    capsys.readouterr()
    assert train(slake, tmp_path, "--save-every", "1", "--resume", str(run)) == 2
    refused(capsys, "cannot be read", str(file if damage == "config.json" else run / "checkpoint"))


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--epochs", "nan", "must be a positive, finite number, got nan"),
        ("--epochs", "inf", "must be a positive, finite number, got inf"),
        ("--seed", "-1", "--seed must be in [0, 2**32), got -1"),
        ("--batch-size", "0", "must be at least 1, got 0"),
        ("--max-new-tokens", "-5", "--max-new-tokens must be at least 1, got -5"),
    ],
)
def test_numeric_flags_are_checked_before_anything_runs(slake, tmp_path, capsys, flag, value, words):
    argv = ["train", "llava", "ln", "--dataset", str(slake), "--quiet", flag, value]
    assert main([*argv, "--output-dir", str(tmp_path / "runs")]) == 2
    refused(capsys, words)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--batch-size", "0", "--batch-size must be at least 1, got 0"),
        ("--temperature", "-1", "--temperature must be 0 (greedy) or a positive, finite number, got -1.0"),
        ("--temperature", "nan", "--temperature must be 0 (greedy) or a positive, finite number, got nan"),
        ("--max-new-tokens", "-5", "--max-new-tokens must be at least 1, got -5"),
    ],
)
def test_generation_flags_are_checked_before_loading(slake, tmp_path, capsys, command, flag, value, words):
    where = ["--dataset", str(slake)] if command == "eval" else ["--image", "x.png", "--question", "q"]
    assert main([command, str(tmp_path / "no-run"), *where, "--quiet", flag, value]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and f"medtune {command}: error: {words}" in captured.err


def test_full_disk_before_predictions_is_a_sentence_and_leaves_no_tmp(slake, tmp_path, capsys, monkeypatch):
    import shutil as shutil_module

    assert train(slake, tmp_path) == 0
    (run,) = (tmp_path / "runs").iterdir()
    real = shutil_module.disk_usage

    def nearly_full(path):  # what the disk reports when 512 bytes are left
        return real(path)._replace(free=512)

    monkeypatch.setattr("medtune.tuning.run_dir.shutil.disk_usage", nearly_full)
    capsys.readouterr()
    assert main(["eval", str(run), "--dataset", str(slake), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "Traceback" not in err
        and "not enough disk space for the predictions" in err
        and "512 bytes are free" in err
    )
    assert not list(run.rglob("*.tmp"))


def test_plain_file_as_dataset_says_what_files_are_read(slake, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a dataset\n")
    assert train(notes, tmp_path) == 2
    refused(capsys, f"--dataset {notes} is not a dataset file medtune reads", "JSON, JSONL, parquet")
