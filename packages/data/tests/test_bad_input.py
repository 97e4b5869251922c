import json

import pytest

from medtune.data import DataError, ImageLoadError, check_images, load_image, read_vqa


def _slake_with(tmp_path, builders, bad_row):
    rows = [builders.slake_row(0, 0), bad_row, builders.slake_row(2, 2)]
    return builders.build_slake(tmp_path, {"train": rows})


def _drop(row, key):
    row = dict(row)
    del row[key]
    return row


BAD_ROWS = {
    "missing field": (lambda b: _drop(b.slake_row(1, 1), "answer"), "answer", "no 'answer' field"),
    "unknown answer_type": (
        lambda b: b.slake_row(1, 1, answer_type="MAYBE"),
        "answer_type",
        "unknown answer_type",
    ),
    "empty question": (lambda b: b.slake_row(1, 1, question="   "), "question", "question is empty"),
    "empty answer": (lambda b: b.slake_row(1, 1, answer=""), "answer", "answer is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_record_raises_naming_file_record_and_field(tmp_path, builders, case):
    make_row, field, reason = BAD_ROWS[case]
    root = _slake_with(tmp_path, builders, make_row(builders))
    with pytest.raises(DataError) as info:
        read_vqa(root, "train")
    message = str(info.value)
    assert str(root / "train.json") in message and "record 1" in message and "id '1'" in message
    assert f"field '{field}'" in message and reason in message
    assert info.value.rejection.index == 1 and info.value.rejection.field == field


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_record_is_reported_not_dropped_silently(tmp_path, builders, case):
    make_row, field, _ = BAD_ROWS[case]
    root = _slake_with(tmp_path, builders, make_row(builders))
    rejected = []
    records = read_vqa(root, "train", on_invalid="report", rejected=rejected)
    assert [r.qid for r in records] == ["0", "2"]
    assert [(r.index, r.record_id, r.field) for r in rejected] == [(1, "1", field)]


def test_missing_image_fails_at_read_time(tmp_path, builders):
    root = _slake_with(tmp_path, builders, builders.slake_row(1, 1))
    (root / "imgs" / "xmlab1" / "source.jpg").unlink()
    with pytest.raises(DataError, match=r"record 1.*field 'image'.*xmlab1/source.jpg does not exist"):
        read_vqa(root, "train")
    rejected = []
    assert len(read_vqa(root, "train", on_invalid="report", rejected=rejected)) == 2
    assert rejected[0].field == "image" and rejected[0].record_id == "1"


def test_json_that_is_not_a_list(tmp_path, builders):
    root = builders.build_slake(tmp_path, {"train": {"rows": []}})
    with pytest.raises(
        DataError, match=r"train.json: the top level is a JSON object, but this layout needs a list"
    ):
        read_vqa(root, "train", layout="slake")
    # A whole file is not a record that can be skipped: report mode raises the same sentence.
    rejected = []
    with pytest.raises(DataError, match="top level is a JSON object") as info:
        read_vqa(root, "train", layout="slake", on_invalid="report", rejected=rejected)
    assert rejected == [] and info.value.rejection.index is None


def test_duplicate_qid(tmp_path, builders):
    root = _slake_with(tmp_path, builders, builders.slake_row(0, 1))
    with pytest.raises(DataError, match=r"record 1, id '0', field 'qid'.*twice"):
        read_vqa(root, "train")


def test_vqarad_bad_answer_type_names_its_file(tmp_path, builders):
    rows = [builders.vqarad_row(0, "freeform"), builders.vqarad_row(1, "freeform", answer_type="YESNO")]
    root = builders.build_vqarad(tmp_path, rows)
    with pytest.raises(
        DataError, match=r"VQA_RAD Dataset Public.json, record 1, id '1', field 'answer_type'"
    ):
        read_vqa(root, "train")


def test_llava_bad_turns(tmp_path, builders):
    row = builders.llava_row("x", "images/x.png", "<image>\nq", "a")
    row["conversations"][1]["from"] = "human"
    path = builders.build_llava(
        tmp_path / "train.json", [builders.llava_row("ok", "images/o.png", "<image>\nq", "a"), row]
    )
    with pytest.raises(DataError, match=r"record 1, id 'x', field 'conversations\[1\]'"):
        read_vqa(path, "train")


def _corrupt(path):
    path.write_bytes(b"this is not a jpeg")


def test_unreadable_image_raises_at_load_naming_file_and_record(tmp_path, builders):
    root = _slake_with(tmp_path, builders, builders.slake_row(1, 1))
    records = read_vqa(root, "train")
    _corrupt(root / "imgs" / "xmlab1" / "source.jpg")  # broken after the read: caught when decoded
    with pytest.raises(ImageLoadError, match=r"xmlab1/source.jpg \(record '1'\) cannot be decoded"):
        load_image(records[1].image, records[1].qid)
    with pytest.raises(DataError, match=r"record 1, id '1', field 'image'"):
        check_images(records)
    rejected = []
    assert [r.qid for r in check_images(records, on_invalid="report", rejected=rejected)] == ["0", "2"]
    assert rejected[0].record_id == "1"


def test_grey_scale_images_load_as_rgb(tmp_path, builders):
    grey = builders.make_image(tmp_path / "g.png", mode="L")
    img = load_image(grey)
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (128, 128, 128)


def test_invalid_json_syntax(tmp_path, builders):
    root = builders.build_slake(tmp_path)
    (root / "train.json").write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match="is not valid JSON"):
        read_vqa(root, "train", layout="slake")
    assert json.loads((root / "test.json").read_text())  # other splits untouched
