"""What the fuzz tests found, pinned: corrupt Hugging Face tables and LLaVA-Med question lines are sentences."""

from __future__ import annotations

import io
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medtune.data import DataError, read_llava_questions, read_vqa


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _png(value: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12, 10), value).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _hub(root, columns: dict):
    """Write columns as the train split of a Hub-style folder and return the parquet file's path."""
    (root / "data").mkdir(parents=True)
    path = root / "data" / "train-00000-of-00001.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def _images(n: int) -> pa.Array:
    return pa.array([{"bytes": _png(10 * k), "path": f"p{k}.png"} for k in range(n)], IMAGE)


# --- LLaVA-Med question JSONL ------------------------------------------------------------------------


def _questions(tmp_path, builders, body: bytes):
    builders.make_image(tmp_path / "a.jpg", fmt="JPEG")
    path = tmp_path / "questions.jsonl"
    path.write_bytes(body)
    return path


def _line(qid: int, **over) -> bytes:
    return (
        json.dumps({"question_id": qid, "image": "a.jpg", "text": "Is it normal?", "answer": "no", **over})
        + "\n"
    ).encode()


def test_a_null_line_is_a_rejected_record_not_a_skipped_one(tmp_path, builders):
    path = _questions(tmp_path, builders, _line(1) + b"null\n" + _line(3))
    rejected: list = []
    records = read_llava_questions(path, on_invalid="report", rejected=rejected)
    assert [r.qid for r in records] == ["1", "3"]
    assert [(r.index, r.field) for r in rejected] == [(1, "<record>")]
    with pytest.raises(DataError, match=r"questions.jsonl, record 1, field '<record>'"):
        read_llava_questions(path)


def test_a_line_that_is_not_utf8_is_one_record_error(tmp_path, builders):
    bad = _line(2).replace(b"normal", b"norm\xe4l")
    path = _questions(tmp_path, builders, _line(1) + bad + _line(3))
    rejected: list = []
    records = read_llava_questions(path, on_invalid="report", rejected=rejected)
    assert [r.qid for r in records] == ["1", "3"]  # the other lines are still read
    assert len(rejected) == 1 and "line 2 is not UTF-8 text (byte 0xe4" in rejected[0].reason
    with pytest.raises(DataError, match=r"questions.jsonl, record 1: line 2 is not UTF-8 text"):
        read_llava_questions(path)


@pytest.mark.parametrize("text", [["Is", "it"], {"q": "x"}, None])
def test_a_question_text_that_is_not_text_is_rejected(tmp_path, builders, text):
    path = _questions(tmp_path, builders, _line(1, text=text) + _line(2))
    rejected: list = []
    assert [r.question for r in read_llava_questions(path, on_invalid="report", rejected=rejected)] == [
        "Is it normal?"
    ]
    assert rejected[0].field in ("text", "question"), rejected


# --- Hugging Face tables -----------------------------------------------------------------------------


def test_a_corrupt_parquet_file_is_named(tmp_path):
    path = _hub(tmp_path / "ds", {"image": _images(3), "question": ["a?", "b?", "c?"], "answer": ["yes"] * 3})
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(
        DataError, match=rf"{path}: cannot be read as a datasets table \(ArrowInvalid: .*re-download"
    ):
        read_vqa(tmp_path / "ds", "train")


def test_an_empty_parquet_file_is_named(tmp_path):
    path = _hub(
        tmp_path / "ds",
        {"image": _images(0), "question": pa.array([], pa.string()), "answer": pa.array([], pa.string())},
    )
    with pytest.raises(DataError, match=rf"{path}: is a parquet file with no rows"):
        read_vqa(tmp_path / "ds", "train")


def test_a_corrupt_save_to_disk_state_file_is_named(tmp_path):
    table = datasets.Dataset.from_dict({"image": [_png()], "question": ["q?"], "answer": ["no"]})
    table.save_to_disk(str(tmp_path / "saved"))
    state = tmp_path / "saved" / "state.json"
    state.write_text(state.read_text()[:-5])
    with pytest.raises(DataError, match=rf"{state}: is not valid JSON"):
        read_vqa(tmp_path / "saved", "train")


def test_a_save_to_disk_arrow_file_with_bad_offsets_is_a_sentence(tmp_path):
    table = datasets.Dataset.from_dict(
        {"image": [_png()] * 2, "question": ["first?", "second?"], "answer": ["no", "yes"]}
    )
    table.save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    data = bytearray(arrow.read_bytes())
    # the question column's offsets (0, 6, 13) follow its validity bitmap: point the last one far away
    at = data.find((6).to_bytes(4, "little") + (13).to_bytes(4, "little"))
    data[at + 4 : at + 8] = (1 << 20).to_bytes(4, "little")
    arrow.write_bytes(bytes(data))
    with pytest.raises(
        DataError, match=r"saved: cannot be read as a datasets table \(ArrowInvalid: .*offset"
    ):
        read_vqa(tmp_path / "saved", "train")


def test_table_cells_read_as_the_json_readers_read_them(tmp_path):
    _hub(
        tmp_path / "ds",
        {
            "image": _images(4),
            "question": ["a?", "b?", "c?", "d?"],
            "answer": pa.array([1.0, 3.0, 2.5, float("inf")]),
        },
    )
    rejected: list = []
    records = read_vqa(tmp_path / "ds", "train", on_invalid="report", rejected=rejected)
    assert [r.answer for r in records] == ["1", "3", "2.5"]
    assert [(r.index, r.field) for r in rejected] == [(3, "answer")] and "number inf" in rejected[0].reason
    _hub(tmp_path / "yn", {"image": _images(2), "question": ["a?", "b?"], "answer": [True, False]})
    assert [r.answer for r in read_vqa(tmp_path / "yn", "train")] == ["yes", "no"]  # not 'True'


def test_an_image_cell_with_a_binary_path_keeps_its_bytes(tmp_path):
    images = pa.array(
        [{"bytes": _png(), "path": b"p0.png"}], pa.struct([("bytes", pa.binary()), ("path", pa.binary())])
    )
    _hub(tmp_path / "ds", {"image": images, "question": ["q?"], "answer": ["no"]})
    (record,) = read_vqa(tmp_path / "ds", "train")
    assert record.image.is_file() and "image_name" not in record.extra


def test_a_bad_line_further_down_does_not_hide_the_question_layout(tmp_path, builders):
    from medtune.data.llava_json import is_question_file

    path = _questions(tmp_path, builders, _line(1) + b"null\n" + _line(3).replace(b"normal", b"norm\xe4l"))
    assert is_question_file(path)
    rejected: list = []
    records = read_vqa(path, "test", on_invalid="report", rejected=rejected)  # read as LLaVA-Med, not a table
    assert [r.qid for r in records] == ["1"] and len(rejected) == 2
