"""`medtune train --dataset` on Hugging Face layouts: a Hub parquet folder end to end, mapped columns, no test split."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medtune.data import demo_dataset
from medtune.tuning.cli import main

FAST = ["--quiet", "--batch-size", "2", "--max-steps", "1", "--no-eval-before", "--max-new-tokens", "2"]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _demo_rows(split: str, n: int) -> dict:
    """Return n demo Slake rows as Hub-style columns: image {bytes, path}, question, answer (no answer type)."""
    root = demo_dataset("downstream")
    rows = json.loads((root / f"{split}.json").read_text())[:n]
    return {
        "image": [
            {"bytes": (root / "imgs" / r["img_name"]).read_bytes(), "path": "source.jpg"} for r in rows
        ],
        "question": [r["question"] for r in rows],
        "answer": [str(r["answer"]) for r in rows],
    }


def _write_hub_folder(root, n_train: int = 4, n_test: int = 3):
    """Write the published vqa-rad Hub layout: data/{train,test}-00000-of-00001-<hash>.parquet."""
    (root / "data").mkdir(parents=True)
    features = datasets.Features(
        {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
    )
    for split, n in (("train", n_train), ("test", n_test)):
        table = datasets.Dataset.from_dict(_demo_rows(split, n), features=features)
        table.to_parquet(str(root / "data" / f"{split}-00000-of-00001-a1b2c3d4.parquet"))
    return root


@pytest.mark.slow
def test_train_on_a_hub_parquet_folder_end_to_end(tmp_path, demo_cache, capsys):
    root = _write_hub_folder(tmp_path / "vqa-rad")
    out = tmp_path / "runs"
    assert main(["train", "llava", "ln", "--dataset", str(root), *FAST, "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "vqa-rad/train: 4 of 4 question(s) have no answer type; yes/no answers are scored as closed"
        in printed
    )
    assert "(vqa: 4 train / 3 test questions)" in printed
    (run,) = out.iterdir()
    assert (run / "adapter" / "manifest.json").is_file()
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 3
    test_answers = _demo_rows("test", 3)["answer"]
    closed = sum(a.lower() in ("yes", "no") for a in test_answers)
    scores = json.loads((run / "scores.json").read_text())
    assert (scores["n_closed"], scores["n_open"]) == (closed, 3 - closed)


def _mapped_file(path, split: str = "train", n: int = 3):
    """Write a parquet file by pyarrow alone (no datasets metadata) whose columns are named img, query, label."""
    rows = _demo_rows(split, n)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {"img": pa.array(rows["image"], struct), "query": rows["question"], "label": rows["answer"]}
    )
    pq.write_table(table, path)
    return path


def _small_slake(root):
    """Copy the first two test questions of the demo's Slake folder, with their images, to root."""
    demo = demo_dataset("downstream")
    rows = [r for r in json.loads((demo / "test.json").read_text()) if r["q_lang"] == "en"][:2]
    for row in rows:
        (root / "imgs" / row["img_name"]).parent.mkdir(parents=True, exist_ok=True)
        (root / "imgs" / row["img_name"]).write_bytes((demo / "imgs" / row["img_name"]).read_bytes())
    (root / "test.json").write_text(json.dumps(rows))
    return root


def test_one_file_without_a_test_split_needs_eval_dataset(tmp_path, demo_cache, capsys):
    data = _mapped_file(tmp_path / "mine.parquet")
    out = tmp_path / "runs"
    argv = [
        "train",
        "llava",
        "ln",
        "--dataset",
        str(data),
        "--columns",
        "question=query,answer=label,image=img",
    ]
    assert main([*argv, *FAST, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--dataset {data} is one file with no split in its name, so it has no test split" in err
    assert "--eval-dataset PATH" in err and not out.exists()
    held_out = _mapped_file(tmp_path / "test.parquet", "test", 2)  # named for its split
    assert main([*argv, "--eval-dataset", str(held_out), "--eval-every", "1", *FAST]) == 2
    assert "so it has no validation split apart from the training data" in capsys.readouterr().err
    assert main([*argv, "--eval-dataset", str(held_out), *FAST, "--output-dir", str(out)]) == 0
    (run,) = out.iterdir()
    assert "(vqa: 3 train / 2 test questions)" in capsys.readouterr().out
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 2
    # --columns describes --dataset: a Slake folder as --eval-dataset is read with its own field names
    slake = _small_slake(tmp_path / "Slake1.0")
    assert (
        main([*argv, "--eval-dataset", str(slake), *FAST, "--output-dir", str(tmp_path / "slake-runs")]) == 0
    )
    printed = capsys.readouterr().out
    assert f"--columns describe --dataset; --eval-dataset {slake} is read in its own layout" in printed


def test_a_column_map_naming_a_missing_column_is_one_sentence(tmp_path, demo_cache, capsys):
    root = _write_hub_folder(tmp_path / "vqa-rad")
    argv = ["train", "llava", "ln", "--dataset", str(root), "--columns", "image=picture", *FAST]
    assert main([*argv, "--output-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("medtune train: error: ")
    assert (
        "train-00000-of-00001-a1b2c3d4.parquet, field 'image': --columns maps image to the column 'picture'"
        in line
    )


def test_llava_instruction_data_with_an_image_folder_scored_on_a_question_file(tmp_path, demo_cache, capsys):
    """Multi-turn LLaVA JSON trains with images in their own folder; the LLaVA-Med question JSONL is scored."""
    demo = demo_dataset("downstream")
    rows = json.loads((demo / "train.json").read_text())[:4]
    images = tmp_path / "pmc-images"
    conversations = []
    for k, row in enumerate(rows):
        (images / row["img_name"]).parent.mkdir(parents=True, exist_ok=True)
        (images / row["img_name"]).write_bytes((demo / "imgs" / row["img_name"]).read_bytes())
        turns = [
            {"from": "human", "value": f"<image>\n{row['question']}"},
            {"from": "gpt", "value": str(row["answer"])},
            {"from": "human", "value": "Which modality is it?"},
            {"from": "gpt", "value": row["modality"]},
        ]
        conversations.append({"id": f"c{k}", "image": row["img_name"], "conversations": turns})
    train = tmp_path / "instruct" / "train.json"
    train.parent.mkdir()
    train.write_text(json.dumps(conversations))
    questions = tmp_path / "llava_med_eval_qa50_qa.jsonl"
    lines = [
        {"question_id": k, "image": r["img_name"], "text": r["question"], "answer": str(r["answer"])}
        for k, r in enumerate(rows[:2])
    ]
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "runs"
    argv = ["train", "llava", "ln", "--dataset", str(train), "--image-folder", str(images), *FAST]
    assert main([*argv, "--output-dir", str(out)]) == 2  # train.json alone has no test split
    assert "train.json: has no 'test' split (the file is the train split alone)" in capsys.readouterr().err
    assert main([*argv, "--eval-dataset", str(questions), "--output-dir", str(out)]) == 0
    assert "(vqa: 4 train / 2 test questions)" in capsys.readouterr().out
    (run,) = out.iterdir()
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["qid"] for p in predictions) == ["0", "1"]
    # medtune eval reads the same question file against the same image folder
    evaluate = ["eval", str(run), "--dataset", str(questions), "--image-folder", str(images), "--quiet"]
    assert main([*evaluate, "--max-new-tokens", "2"]) == 0
    assert "llava_med_eval_qa50_qa.jsonl" in capsys.readouterr().out
    # the folder confines the images: a path that leaves it stops the run with a sentence
    conversations[1]["image"] = "../instruct/train.json"
    train.write_text(json.dumps(conversations))
    assert main([*argv, "--no-eval", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        "train.json, record 1, id 'c1', field 'image': the image path" in err
        and "lies outside the image folder" in err
    )
