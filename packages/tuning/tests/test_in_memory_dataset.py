"""The Python API trains on an in-memory datasets.Dataset: saved once by content, read like a saved folder."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from medtune.data import demo_dataset
from medtune.data.splits import LayoutError
from medtune.tuning.errors import UsageError
from medtune.tuning.recipes import resolve_config
from medtune.tuning.train import train

FAST = {"batch_size": 2, "max_steps": 1, "eval_before": False, "max_new_tokens": 2}


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _rows(split: str, n: int, image_bytes: bool = True) -> dict:
    """Return n demo Slake rows as columns: the image as Image bytes or as a path relative to the demo folder."""
    root = demo_dataset("downstream")
    rows = json.loads((root / f"{split}.json").read_text())[:n]
    images = [
        {"bytes": (root / "imgs" / r["img_name"]).read_bytes(), "path": None}
        if image_bytes
        else f"imgs/{r['img_name']}"
        for r in rows
    ]
    return {
        "image": images,
        "question": [r["question"] for r in rows],
        "answer": [str(r["answer"]) for r in rows],
    }


def _table(split: str, n: int) -> datasets.Dataset:
    features = datasets.Features(
        {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
    )
    return datasets.Dataset.from_dict(_rows(split, n), features=features)


def _config(data, **settings):
    return resolve_config("llava", "ln", "tiny-llava", "F,F,PEFT,F", {**FAST, "dataset": data, **settings})


@pytest.mark.slow
def test_train_takes_a_dataset_dict_and_scores_its_test_split(tmp_path, demo_cache):
    data = datasets.DatasetDict(train=_table("train", 4), test=_table("test", 3))
    cfg = _config(data, output_dir=str(tmp_path / "runs"))
    saved = cfg.dataset
    assert isinstance(saved, str) and saved.startswith(str(demo_cache / "datasets"))
    result = train(cfg, progress=False)
    assert json.loads((result.run_dir / "config.json").read_text())["dataset"]["source"] == saved
    predictions = (result.run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 3
    assert result.after is not None and result.after["n_open"] + result.after["n_closed"] == 3


def test_the_same_data_is_saved_once_and_other_data_apart(demo_cache):
    first = _config(_table("train", 3), eval_after=False).dataset
    stamp = max(p.stat().st_mtime_ns for p in Path(first).rglob("*"))
    again = _config(_table("train", 3), eval_after=False).dataset
    assert again == first
    assert max(p.stat().st_mtime_ns for p in Path(first).rglob("*")) == stamp
    assert _config(_table("train", 2), eval_after=False).dataset != first


def test_a_lone_dataset_is_training_data_only_and_its_relative_paths_stay_readable(
    tmp_path, demo_cache, monkeypatch
):
    monkeypatch.chdir(demo_dataset("downstream"))
    table = datasets.Dataset.from_dict(_rows("train", 4, image_bytes=False))
    cfg = _config(table, output_dir=str(tmp_path / "runs"), eval_after=False)
    saved = datasets.load_from_disk(cfg.dataset)
    assert list(saved) == ["train"]  # no test split to be scored on the training data
    assert all(path.startswith(str(demo_dataset("downstream"))) for path in saved["train"]["image"])
    with pytest.raises(
        LayoutError, match=r"has no 'test' split .* never scores a model on its own training data"
    ):
        train(_config(table, output_dir=str(tmp_path / "runs")), progress=False)


def test_anything_else_is_a_sentence():
    with pytest.raises(
        UsageError, match=r"dataset must be a path or a datasets\.Dataset / DatasetDict, got list"
    ):
        _config([{"question": "q"}])


def test_a_saved_lone_dataset_has_no_test_split_apart_from_its_training_data(tmp_path):
    from medtune.tuning.datasets import check_held_out

    _table("train", 2).save_to_disk(str(tmp_path / "lone"))
    with pytest.raises(UsageError, match=r"is one saved Dataset, not a DatasetDict.*--eval-dataset"):
        check_held_out(tmp_path / "lone", "vqa", "test")
    datasets.DatasetDict(train=_table("train", 2)).save_to_disk(str(tmp_path / "dict"))
    check_held_out(tmp_path / "dict", "vqa", "test")  # its splits are named: the read says what is missing
