"""Hugging Face `datasets` inputs, written in the published layouts: Hub parquet, save_to_disk, CSV, Dataset."""

import io
import json

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medtune.data import DataError, load_image, read_vqa
from medtune.data.hf_vqa import parse_columns

FEATURES = datasets.Features(
    {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
)


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Every test converts into its own datasets cache, never the user's."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12, 10), value).save(buffer, format="PNG")
    return buffer.getvalue()


def _rows(n: int, offset: int = 0) -> dict:
    answers = ["yes", "lung", "no", "right upper lobe"]
    return {
        "image": [{"bytes": _jpeg(40 * k + offset), "path": f"synpic{k + offset}.jpg"} for k in range(n)],
        "question": [f"question {k + offset}?" for k in range(n)],
        "answer": [answers[k % len(answers)] for k in range(n)],
    }


def build_hub_vqarad(root, train: int = 4, test: int = 2):
    """Write the Hub's vqa-rad layout: data/{train,test}-00000-of-00001-<hash>.parquet, image {bytes, path}."""
    (root / "data").mkdir(parents=True)
    for split, n, offset in (("train", train, 0), ("test", test, 100)):
        table = datasets.Dataset.from_dict(_rows(n, offset), features=FEATURES)
        table.to_parquet(str(root / "data" / f"{split}-00000-of-00001-5ab1f0c2d3e4.parquet"))
    (root / "README.md").write_text("---\nlicense: cc0-1.0\n---\n# VQA-RAD\n", encoding="utf-8")
    return root


def test_hub_parquet_folder_reads_both_splits(tmp_path):
    root = build_hub_vqarad(tmp_path / "vqa-rad")
    train, test = read_vqa(root, "train"), read_vqa(root, "test")
    assert [r.qid for r in train] == ["train-0", "train-1", "train-2", "train-3"]
    assert [r.question for r in test] == ["question 100?", "question 101?"]
    # no answer_type column: yes/no closed, the rest open, and each record says it was inferred
    assert [r.answer_type for r in train] == ["CLOSED", "OPEN", "CLOSED", "OPEN"]
    assert all(r.extra["answer_type_inferred"] for r in train)
    # the image bytes became a file whose pixels are the ones written
    assert np.asarray(load_image(train[1].image))[0, 0, 0] == 40
    assert train[1].image.suffix == ".jpg" and train[1].image.is_file()
    assert train[1].extra["image_name"] == "synpic1.jpg"  # the table's own name, kept for messages


def test_parquet_written_by_pyarrow_without_datasets_metadata(tmp_path):
    rows = _rows(3)
    table = pa.table(
        {
            "img": pa.array(rows["image"], pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "query": rows["question"],
            "label": rows["answer"],
            "kind": ["CLOSED", "OPEN", "closed"],
            "question_id": [7, 8, 9],
        }
    )
    (tmp_path / "ds").mkdir()
    pq.write_table(table, tmp_path / "ds" / "train.parquet")
    records = read_vqa(
        tmp_path / "ds", "train", columns="question=query, answer=label,image=img,answer_type=kind"
    )
    assert [(r.qid, r.answer_type) for r in records] == [("7", "CLOSED"), ("8", "OPEN"), ("9", "CLOSED")]
    assert "answer_type_inferred" not in records[0].extra
    assert np.asarray(load_image(records[2].image))[0, 0, 0] == 80


@pytest.mark.parametrize("as_dict", [True, False])
def test_save_to_disk_folder(tmp_path, as_dict):
    train = datasets.Dataset.from_dict(_rows(3), features=FEATURES)
    if as_dict:
        test = datasets.Dataset.from_dict(_rows(2, 100), features=FEATURES)
        datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "saved"))
        assert [r.question for r in read_vqa(tmp_path / "saved", "test")] == [
            "question 100?",
            "question 101?",
        ]
    else:
        train.save_to_disk(str(tmp_path / "saved"))  # a lone Dataset is whichever split is asked
    assert [r.answer for r in read_vqa(tmp_path / "saved", "train")] == ["yes", "lung", "no"]


def test_in_memory_dataset_and_dataset_dict(tmp_path):
    train = datasets.Dataset.from_dict(_rows(2), features=FEATURES)
    assert [r.qid for r in read_vqa(train, "train")] == ["train-0", "train-1"]
    both = datasets.DatasetDict({"train": train, "validation": train.select([1])})
    assert [r.question for r in read_vqa(both, "validation")] == ["question 1?"]
    with pytest.raises(DataError, match=r"has no 'test' split \(it has: train, validation\).*--eval-dataset"):
        read_vqa(both, "test")


def test_csv_with_image_paths_under_an_image_folder(tmp_path):
    images = tmp_path / "pictures"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (8, 8), 7).save(images / name)
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "train.csv").write_text(
        "file,q,a\na.png,Is it normal?,Yes\nb.png,Which organ?,liver\n", encoding="utf-8"
    )
    records = read_vqa(
        tmp_path / "table", "train", columns="image=file,question=q,answer=a", image_folder=images
    )
    assert [(r.image, r.answer, r.answer_type) for r in records] == [
        (images / "a.png", "yes", "CLOSED"),
        (images / "b.png", "liver", "OPEN"),
    ]


def test_a_second_load_hits_the_cache(tmp_path):
    root = build_hub_vqarad(tmp_path / "vqa-rad")
    cache = tmp_path / "hf-cache"
    first = read_vqa(root, "train")

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock"}

    before = snapshot()
    assert any(p.suffix == ".arrow" for p in before)  # the parquet was converted to Arrow once
    second = read_vqa(root, "train")
    assert second == first
    assert snapshot() == before  # no Arrow table, mapped table or image was written again


def test_a_cleaned_image_store_is_written_again(tmp_path):
    root = build_hub_vqarad(tmp_path / "vqa-rad")
    first = read_vqa(root, "train")
    first[0].image.unlink()
    assert read_vqa(root, "train")[0].image.is_file()


def test_single_file_named_for_a_split_serves_that_split_only(tmp_path):
    root = build_hub_vqarad(tmp_path / "vqa-rad")
    test_file = next((root / "data").glob("test-*.parquet"))
    assert len(read_vqa(test_file, "test")) == 2
    with pytest.raises(DataError, match="has no 'train' split"):
        read_vqa(test_file, "train")


def test_parse_columns_names_bad_entries():
    assert parse_columns("question=q,image=img") == {"question": "q", "image": "img"}
    with pytest.raises(ValueError, match="FIELD one of question, answer, image, answer_type, qid"):
        parse_columns("prompt=q")


# Bad input: one sentence naming the file, the record where there is one, and the field.


def test_parquet_folder_without_an_image_column(tmp_path):
    (tmp_path / "ds" / "data").mkdir(parents=True)
    path = tmp_path / "ds" / "data" / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"question": ["q?"], "answer": ["yes"]}), path)
    with pytest.raises(DataError) as err:
        read_vqa(tmp_path / "ds", "train")
    assert str(err.value) == (
        f"{path}, field 'image': the data has no 'image' column (columns: question, answer); "
        "add --columns image=COLUMN naming the column that holds it."
    )


def test_column_map_naming_a_missing_column(tmp_path):
    root = build_hub_vqarad(tmp_path / "vqa-rad")
    with pytest.raises(
        DataError,
        match=r"train-00000-of-00001-5ab1f0c2d3e4.parquet, field 'question': "
        r"--columns maps question to the column 'prompt', which this data does not have",
    ):
        read_vqa(root, "train", columns="question=prompt")


def test_image_path_outside_the_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "secret.png")
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"image": "../secret.png", "question": "q?", "answer": "no"}) + "\n")
    with pytest.raises(
        DataError,
        match=r"train.jsonl, record 0, id 'train-0', field 'image': the image path "
        r"\S*images/\.\./secret.png lies outside the image folder",
    ):
        read_vqa(path, "train", image_folder=tmp_path / "images")


def test_a_q_lang_column_keeps_one_language_as_the_slake_reader_does(tmp_path):
    rows = {**_rows(3), "q_lang": ["en", "zh", "en"]}
    table = datasets.Dataset.from_dict(
        rows, features=datasets.Features({**FEATURES, "q_lang": datasets.Value("string")})
    )
    assert [r.question for r in read_vqa(table, "train")] == ["question 0?", "question 2?"]
    assert [r.question for r in read_vqa(table, "train", "zh")] == ["question 1?"]
    assert len(read_vqa(table, "train", "all")) == 3


@pytest.mark.parametrize("name", ["data/train.jsonl", "train.json"])
def test_json_records_with_image_paths(tmp_path, name):
    rows = [{"image": "images/a.png", "question": "Is it normal?", "answer": "No", "answer_type": "CLOSED"}]
    path = tmp_path / "ds" / name
    path.parent.mkdir(parents=True)
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    (tmp_path / "ds" / "images").mkdir()
    Image.new("L", (8, 8), 3).save(tmp_path / "ds" / "images" / "a.png")
    (record,) = read_vqa(tmp_path / "ds", "train")
    assert (record.image, record.answer, record.answer_type) == (
        tmp_path / "ds" / "images" / "a.png",
        "no",
        "CLOSED",
    )


def test_columns_for_a_layout_with_fixed_fields_is_refused(tmp_path, builders):
    root = builders.build_slake(tmp_path / "Slake1.0")
    with pytest.raises(DataError, match=r"Slake1.0: is a slake dataset, whose fields have fixed names"):
        read_vqa(root, "train", columns="question=q")


def test_a_list_valued_answer_column_is_a_record_error(tmp_path):
    rows = {**_rows(1), "answers": [["yes", "yes", "no"]]}
    features = datasets.Features({**FEATURES, "answers": datasets.Sequence(datasets.Value("string"))})
    table = datasets.Dataset.from_dict(rows, features=features)
    with pytest.raises(
        DataError, match=r"record 0, id 'train-0', field 'answer': the 'answers' cell is a list"
    ):
        read_vqa(table, "train", columns="answer=answers")


def test_an_empty_dataset_split_is_a_sentence(tmp_path):
    table = datasets.Dataset.from_dict(_rows(0), features=FEATURES)
    with pytest.raises(
        DataError, match=r"<datasets.Dataset>: the train split is empty: the file holds no records"
    ):
        read_vqa(table, "train")
