import json

import pytest

from medtune.data import DataError, Rejection, read_llava_json, read_vqa, write_llava_json, write_rejections


def test_slake_english_train(tmp_path, builders):
    root = builders.build_slake(tmp_path / "Slake1.0")
    records = read_vqa(root, "train")
    assert [r.qid for r in records] == ["0", "1", "3"]
    assert records[0].image == root / "imgs" / "xmlab0" / "source.jpg"
    assert records[0].extra["modality"] == "CT" and records[0].extra["location"] == "Chest"
    assert records[0].source == "slake"
    # yes/no casing normalised, raw kept; JSON integers become strings
    assert (records[1].answer, records[1].answer_raw, records[1].answer_type) == ("yes", "Yes", "CLOSED")
    assert records[2].answer == "3" and isinstance(records[2].answer, str)


@pytest.mark.parametrize(("lang", "qids"), [("en", ["20"]), ("zh", ["21"]), ("all", ["20", "21"])])
def test_slake_language_filter(tmp_path, builders, lang, qids):
    root = builders.build_slake(tmp_path)
    assert [r.qid for r in read_vqa(root, "test", lang)] == qids


def test_slake_language_filter_runs_before_field_checks(tmp_path, builders):
    bad_zh = builders.slake_row(5, 0, lang="zh", answer="")
    root = builders.build_slake(tmp_path, {"train": [builders.slake_row(0, 0), bad_zh]})
    assert [r.qid for r in read_vqa(root, "train", "en")] == ["0"]
    with pytest.raises(DataError, match="answer"):
        read_vqa(root, "train", "all")


@pytest.mark.parametrize("name", ["validate.json", "validation.json"])
def test_slake_validation_file_names(tmp_path, builders, name):
    root = builders.build_slake(tmp_path, validation_name=name)
    assert [r.qid for r in read_vqa(root, "validation")] == ["10"]


def test_slake_single_file(tmp_path, builders):
    root = builders.build_slake(tmp_path)
    assert [r.qid for r in read_vqa(root / "test.json", "test")] == ["20"]


def test_vqarad_splits(tmp_path, builders):
    root = builders.build_vqarad(tmp_path / "vqa-rad")
    test = read_vqa(root, "test")
    assert [r.extra["phrase_type"] for r in test] == ["test_freeform", "test_para"]
    assert [r.qid for r in read_vqa(root, "train")] == ["0", "1", "2", "5"]
    assert [r.qid for r in read_vqa(root, "train", vqarad_freeform_only=True)] == ["0", "1", "5"]
    with pytest.raises(ValueError, match="no validation split"):
        read_vqa(root, "validation")


def test_vqarad_normalisation_keeps_raw(tmp_path, builders):
    root = builders.build_vqarad(tmp_path)
    by_id = {r.qid: r for r in read_vqa(root, "train") + read_vqa(root, "test")}
    assert by_id["0"].answer_type == "CLOSED" and by_id["0"].extra["answer_type_raw"] == "CLOSED "
    assert (by_id["0"].answer, by_id["0"].answer_raw) == ("yes", "Yes")
    assert (by_id["3"].answer, by_id["3"].answer_raw) == ("no", "NO")
    assert by_id["2"].answer == "2" and by_id["2"].answer_type == "OPEN"
    assert by_id["0"].image.name == "synpic0.jpg" and by_id["0"].image.parent.name == "VQA_RAD Image Folder"


def test_llava_json_read(tmp_path, builders):
    path = builders.build_llava(tmp_path / "llava" / "train.json")
    records = read_llava_json(path)
    assert [r.question for r in records] == ["Is the heart enlarged?", "What modality is this?"]
    assert records[0].answer == "no" and records[0].answer_type == "CLOSED"
    # answer_type absent: inferred (yes/no -> CLOSED, otherwise OPEN) and flagged
    assert records[1].answer_type == "OPEN" and records[1].extra["answer_type_inferred"] is True
    # the folder form finds <split>.json
    assert [r.qid for r in read_vqa(tmp_path / "llava", "train")] == ["a1", "a2"]


def test_llava_json_round_trip_from_slake(tmp_path, builders):
    root = builders.build_slake(tmp_path / "slake")
    records = read_vqa(root, "train")
    out = write_llava_json(records, tmp_path / "export" / "slake_train.json")
    rows = json.loads(out.read_text())
    assert rows[0]["conversations"][0]["value"] == "<image>\nWhich organ is shown?"
    assert not rows[0]["image"].startswith("/")
    back = read_llava_json(out)
    assert [(r.qid, r.image.resolve(), r.question, r.answer, r.answer_type) for r in back] == [
        (r.qid, r.image.resolve(), r.question, r.answer, r.answer_type) for r in records
    ]


def test_llava_multi_turn_gives_one_record_with_its_history(tmp_path, builders):
    row = builders.llava_row(
        "m", "images/m.png", "<image>\nIs the heart enlarged?", "no", answer_type="CLOSED"
    )
    row["conversations"] += [{"from": "human", "value": "Which organ?"}, {"from": "gpt", "value": "heart"}]
    path = builders.build_llava(tmp_path / "m.json", [row])
    (record,) = read_llava_json(path)
    assert (record.qid, record.question, record.answer) == ("m", "Which organ?", "heart")
    assert record.extra["history"] == [["Is the heart enlarged?", "no"]]


def test_unknown_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a known VQA layout"):
        read_vqa(tmp_path, "train")


def test_report_mode_needs_a_list(tmp_path, builders):
    root = builders.build_slake(tmp_path)
    with pytest.raises(ValueError, match="rejected"):
        read_vqa(root, "train", on_invalid="report")


def test_write_rejections(tmp_path):
    rejected = [Rejection("a.json", 3, "q7", "answer", "the answer is empty.")]
    path = write_rejections(rejected, tmp_path / "run")
    line = json.loads(path.read_text().splitlines()[0])
    assert path.name == "rejected.jsonl"
    assert (line["file"], line["index"], line["record_id"], line["field"]) == ("a.json", 3, "q7", "answer")
    assert "record 3" in line["message"] and "'q7'" in line["message"]
