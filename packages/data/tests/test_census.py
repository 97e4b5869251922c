"""Bad input the readers must turn into a sentence: empty splits, whole bad files, bad images, bad values."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from medtune.data import DataError, load_image, read_reports, read_vqa
from medtune.data.records import EmptySplitError


def _slake(tmp_path, builders, rows):
    return builders.build_slake(tmp_path, {"train": rows})


# --- empty splits: an error naming the file and what emptied it, in both on_invalid modes -------------


@pytest.mark.parametrize("mode", ["raise", "report"])
def test_empty_slake_train_file_names_the_file(tmp_path, builders, mode):
    root = _slake(tmp_path, builders, [])
    (root / "imgs").mkdir()
    with pytest.raises(
        EmptySplitError, match=r"train.json: the train split is empty: the file holds no records"
    ):
        read_vqa(root, "train", on_invalid=mode, rejected=[])


def test_chinese_only_slake_names_the_language_filter(tmp_path, builders):
    root = _slake(tmp_path, builders, [builders.slake_row(k, k, lang="zh") for k in range(3)])
    with pytest.raises(EmptySplitError) as info:
        read_vqa(root, "train")
    message = str(info.value)
    assert str(root / "train.json") in message and "of its 3 record(s), 3 have q_lang 'zh'" in message
    assert "keeps 'en' only" in message


def test_only_bad_records_in_report_mode_counts_every_one(tmp_path, builders):
    rows = [builders.slake_row(k, k, answer_type="MAYBE") for k in range(3)]
    root = _slake(tmp_path, builders, rows)
    rejected = []
    with pytest.raises(EmptySplitError, match=r"of its 3 record\(s\), 3 invalid \(the first: .*record 0"):
        read_vqa(root, "train", on_invalid="report", rejected=rejected)
    assert [r.index for r in rejected] == [0, 1, 2]


def test_vqarad_split_filter_is_named(tmp_path, builders):
    root = builders.build_vqarad(tmp_path, [builders.vqarad_row(0, "freeform")])
    with pytest.raises(
        EmptySplitError, match=r"1 have phrase_type 'freeform', which is not in the test split"
    ):
        read_vqa(root, "test")


def test_empty_r2gen_split(tmp_path, builders):
    root = builders.build_r2gen(tmp_path, {"train": [], "val": [], "test": []})
    with pytest.raises(EmptySplitError, match=r"annotation.json.*train split is empty"):
        read_reports(root, "train")


# --- whole files: always an error (not one "record"), in report mode too --------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"[{", "is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 3)"),
        (b'{"rows": []}', "the top level is a JSON object, but this layout needs a list"),
        (b'"just text"', "the top level is a JSON string"),
        ("[]".encode("latin-1") + b"\xff", "is not UTF-8 text (byte 0xff at offset 2"),
        (b"[" * 100000, "nests JSON too deeply"),
    ],
)
def test_whole_bad_file_is_one_sentence_in_either_mode(tmp_path, builders, content, words):
    root = _slake(tmp_path, builders, [builders.slake_row(0, 0)])
    (root / "train.json").write_bytes(content)
    for mode in ("raise", "report"):
        rejected = []
        with pytest.raises(DataError) as info:
            read_vqa(root, "train", layout="slake", on_invalid=mode, rejected=rejected)
        assert str(root / "train.json") in str(info.value) and words in str(info.value)
        assert info.value.rejection.index is None and rejected == []


def test_utf8_bom_is_read(tmp_path, builders):
    root = _slake(tmp_path, builders, [builders.slake_row(0, 0), builders.slake_row(1, 1)])
    text = (root / "train.json").read_text(encoding="utf-8")
    (root / "train.json").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert [r.qid for r in read_vqa(root, "train")] == ["0", "1"]


def test_misspelt_vqarad_names_are_pointed_out(tmp_path, builders):
    root = builders.build_vqarad(tmp_path / "rad")
    (root / "VQA_RAD Dataset Public.json").rename(root / "VQA_RAD Dataset Publc.json")
    with pytest.raises(
        ValueError, match=r"'VQA_RAD Dataset Publc.json' looks like a misspelt 'VQA_RAD Dataset Public.json'"
    ):
        read_vqa(root, "train")
    (root / "VQA_RAD Dataset Publc.json").rename(root / "VQA_RAD Dataset Public.json")
    (root / "VQA_RAD Image Folder").rename(root / "VQA_RAD Images")
    with pytest.raises(
        FileNotFoundError, match=r"there is 'VQA_RAD Images': rename it to 'VQA_RAD Image Folder'"
    ):
        read_vqa(root, "train")


def test_empty_folder_says_it_is_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="the folder is empty"):
        read_vqa(tmp_path / "empty", "train")


# --- values: answers and questions must be strings or numbers ------------------------------------------


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (["lung", "liver"], "is a JSON list"),
        ({"text": "lung"}, "is a JSON object"),
        (float("nan"), "is the number nan"),
        (float("inf"), "is the number inf"),
    ],
)
def test_non_text_answers_are_record_errors(tmp_path, builders, answer, words):
    root = _slake(tmp_path, builders, [builders.slake_row(0, 0), builders.slake_row(1, 1, answer=answer)])
    with pytest.raises(DataError) as info:
        read_vqa(root, "train")
    assert "record 1" in str(info.value) and "field 'answer'" in str(info.value) and words in str(info.value)
    rejected = []
    assert [r.qid for r in read_vqa(root, "train", on_invalid="report", rejected=rejected)] == ["0"]
    assert rejected[0].field == "answer"


def test_numbers_become_their_decimal_text(tmp_path, builders):
    rows = [
        builders.slake_row(0, 0, answer=3),
        builders.slake_row(1, 1, answer=2.0),
        builders.slake_row(2, 2, answer=2.5),
    ]
    assert [r.answer for r in read_vqa(_slake(tmp_path, builders, rows), "train")] == ["3", "2", "2.5"]


@pytest.mark.parametrize("name", ["../../outside.jpg", "/etc/outside.jpg", "xmlab0/../../../outside.jpg"])
def test_image_paths_must_stay_inside_the_image_folder(tmp_path, builders, name):
    builders.make_image(tmp_path / "outside.jpg", fmt="JPEG")
    builders.make_image(tmp_path / "data" / "outside.jpg", fmt="JPEG")
    root = _slake(tmp_path / "data", builders, [builders.slake_row(0, 0), builders.slake_row(1, 1)])
    rows = json.loads((root / "train.json").read_text())
    rows[1]["img_name"] = name
    (root / "train.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"record 1, id '1', field 'image'.*lies outside the image folder"):
        read_vqa(root, "train")


# --- images: checked when read, so a bad one is a record error report mode skips and lists ------------


def _jpeg_bytes(size=(40, 30)):
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 90, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def _png_bytes(size=(40, 30)):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def _bomb_png():
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")  # 400 M pixels, a few kB on disk
    return buf.getvalue()


BAD_IMAGES = {
    "0-byte": (lambda: b"", "is empty (0 bytes)"),
    "random bytes": (
        lambda: np.random.default_rng(1).bytes(2048),
        "cannot be decoded (UnidentifiedImageError",
    ),
    "truncated jpeg": (lambda: _jpeg_bytes()[:-200], "cannot be decoded"),
    "truncated png": (lambda: _png_bytes()[:-300], "cannot be decoded"),
    "decompression bomb": (_bomb_png, "DecompressionBombError"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_is_a_record_error_at_read_time(tmp_path, builders, case):
    make, words = BAD_IMAGES[case]
    root = _slake(tmp_path, builders, [builders.slake_row(k, k) for k in range(3)])
    (root / "imgs" / "xmlab1" / "source.jpg").write_bytes(make())
    with pytest.raises(DataError) as info:
        read_vqa(root, "train")
    assert "record 1, id '1', field 'image'" in str(info.value) and words in str(info.value)
    rejected = []
    assert [r.qid for r in read_vqa(root, "train", on_invalid="report", rejected=rejected)] == ["0", "2"]
    assert [(r.index, r.field) for r in rejected] == [(1, "image")]


def test_float_tiff_is_scaled_not_black(tmp_path):
    values = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(values, mode="F").save(tmp_path / "ct.tif")
    grey = np.asarray(load_image(tmp_path / "ct.tif"))[..., 0]
    assert grey.min() == 0 and grey.max() == 255 and len(np.unique(grey)) > 32


def test_float_tiff_with_nan_is_refused(tmp_path, builders):
    root = _slake(tmp_path, builders, [builders.slake_row(0, 0), builders.slake_row(1, 1)])
    values = np.full((8, 8), 0.5, dtype=np.float32)
    values[2, 3] = np.nan
    Image.fromarray(values, mode="F").save(root / "imgs" / "xmlab1" / "ct.tif")
    rows = json.loads((root / "train.json").read_text())
    rows[1]["img_name"] = "xmlab1/ct.tif"
    (root / "train.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"record 1.*field 'image'.*NaN or infinity"):
        read_vqa(root, "train")


def test_bad_report_image_is_skipped_and_listed(tmp_path, builders):
    root = builders.build_r2gen(tmp_path)
    (root / "images" / "CXR1_IM-0001" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(
        DataError, match=r"record 0, id 'CXR1_IM-0001', field 'image_path'.*cannot be decoded"
    ):
        read_reports(root, "train")
    rejected = []
    assert [r.study_id for r in read_reports(root, "train", on_invalid="report", rejected=rejected)] == [
        "CXR2_IM-0002"
    ]
    assert rejected[0].record_id == "CXR1_IM-0001"


def test_unknown_q_lang_is_a_record_error_not_a_filter(tmp_path, builders):
    root = _slake(tmp_path, builders, [builders.slake_row(0, 0), builders.slake_row(1, 1, lang=7)])
    with pytest.raises(DataError, match=r"record 1, id '1', field 'q_lang': unknown q_lang 7"):
        read_vqa(root, "train")


def test_unknown_phrase_type_is_a_record_error_not_a_split(tmp_path, builders):
    rows = [builders.vqarad_row(0, "freeform"), builders.vqarad_row(1, ["test_freeform"])]
    root = builders.build_vqarad(tmp_path, rows)
    with pytest.raises(DataError, match=r"record 1, id '1', field 'phrase_type': unknown phrase_type"):
        read_vqa(root, "train")


def test_non_utf8_mimic_report_is_a_record_error(tmp_path, builders):
    studies = [(10000001, 50000001, ["x"], "train"), (10000002, 50000002, ["y"], "train")]
    root = builders.build_mimic(tmp_path, studies)
    report = root / "files/p10/p10000002/s50000002.txt"
    report.write_bytes(report.read_bytes().replace(b"Findings", b"F\xeendings"))
    rejected = []
    assert [r.study_id for r in read_reports(root, "train", on_invalid="report", rejected=rejected)] == [
        "50000001"
    ]
    assert rejected[0].field == "report" and "is not UTF-8 text (byte 0xee" in rejected[0].reason
