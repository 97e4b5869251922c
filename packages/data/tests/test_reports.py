import pytest

from medtune.data import DataError, read_reports
from medtune.data.openi import openi_split_of
from medtune.data.records import EmptySplitError
from medtune.data.report_sections import extract_sections


def test_r2gen_iu_xray_splits(tmp_path, builders):
    root = builders.build_r2gen(tmp_path / "iu_xray")
    train = read_reports(root, "train")
    assert [r.study_id for r in train] == ["CXR1_IM-0001", "CXR2_IM-0002"]
    assert train[0].images == [
        root / "images" / "CXR1_IM-0001" / "0.png",
        root / "images" / "CXR1_IM-0001" / "1.png",
    ]
    assert train[0].report == "Heart size normal. Case 1." and train[0].source == "iu-xray"
    assert [r.study_id for r in read_reports(root, "validation")] == ["CXR3_IM-0003"]
    assert [r.study_id for r in read_reports(root / "annotation.json", "test")] == ["CXR4_IM-0004"]


def test_r2gen_mimic_annotation(tmp_path, builders):
    root = builders.build_r2gen(tmp_path / "mimic_cxr", mimic=True)
    (record,) = read_reports(root, "test")
    assert record.source == "mimic-cxr" and record.extra["study_id"] == 50000001
    assert record.report == "The lungs are clear. No effusion."
    assert record.images == [root / "images" / "p10/p10000001/s50000001/d0a1.jpg"]


def test_r2gen_bad_entries(tmp_path, builders):
    data = {
        "train": [
            {"id": "ok", "report": "Fine.", "image_path": ["ok/0.png"]},
            {"id": "empty", "report": " ", "image_path": ["e/0.png"]},
            {"id": "noimg", "report": "Text.", "image_path": []},
            {"id": "nofield", "image_path": ["n/0.png"]},
        ],
        "val": [],
        "test": [],
    }
    root = builders.build_r2gen(tmp_path, data)
    with pytest.raises(DataError, match=r"annotation.json, record 1, id 'empty', field 'report'"):
        read_reports(root, "train")
    rejected = []
    assert [r.study_id for r in read_reports(root, "train", on_invalid="report", rejected=rejected)] == ["ok"]
    assert [(r.index, r.field) for r in rejected] == [(1, "report"), (2, "image_path"), (3, "report")]


def _openi_ids(split, n=40):
    return [f"CXR{k}" for k in range(1, n) if openi_split_of(f"CXR{k}") == split]


def test_openi_xml_reports(tmp_path, builders):
    train_id, test_id = _openi_ids("train")[0], _openi_ids("test")[0]
    root = builders.build_openi(
        tmp_path / "openi",
        {
            train_id: (
                "The heart is normal.",
                "No acute disease.",
                [f"{train_id}_1_IM-0001-3001", f"{train_id}_1_IM-0001-4004"],
            ),
            test_id: ("Clear lungs.", "Normal chest.", [f"{test_id}_1_IM-0002-1001"]),
        },
    )
    (record,) = read_reports(root, "train")
    assert record.study_id == train_id
    assert record.report == "The heart is normal. No acute disease."
    assert [p.name for p in record.images] == [
        f"{train_id}_1_IM-0001-3001.png",
        f"{train_id}_1_IM-0001-4004.png",
    ]
    assert record.extra["findings"] == "The heart is normal."
    assert [r.study_id for r in read_reports(root, "test")] == [test_id]


def test_openi_split_is_deterministic_and_roughly_7_1_2():
    splits = [openi_split_of(f"CXR{k}") for k in range(1, 4000)]
    assert splits == [openi_split_of(f"CXR{k}") for k in range(1, 4000)]
    share = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
    assert (
        abs(share["train"] - 0.7) < 0.03
        and abs(share["validation"] - 0.1) < 0.02
        and abs(share["test"] - 0.2) < 0.03
    )


def test_openi_empty_sections_and_no_images_are_reported(tmp_path, builders):
    ids = _openi_ids("train")
    root = builders.build_openi(
        tmp_path,
        {ids[0]: ("Good.", "", ["i0"]), ids[1]: ("", "", ["i1"]), ids[2]: ("Text.", "More.", [])},
    )
    with pytest.raises(DataError, match=f"id '{ids[1]}', field 'FINDINGS/IMPRESSION'"):
        read_reports(root, "train")
    rejected = []
    records = read_reports(root, "train", on_invalid="report", rejected=rejected)
    assert [r.report for r in records] == ["Good."]
    assert sorted((r.record_id, r.field) for r in rejected) == sorted(
        [(ids[1], "FINDINGS/IMPRESSION"), (ids[2], "parentImage")]
    )


def test_mimic_cxr_jpg(tmp_path, builders):
    studies = [
        (10000032, 50414267, ["a1", "a2"], "train"),
        (10000032, 53189527, ["b1"], "validate"),
        (11000011, 51000001, ["c1"], "test"),
        (11000011, 50000002, ["c2"], "train"),
    ]
    root = builders.build_mimic(tmp_path / "mimic", studies)
    train = read_reports(root, "train")
    assert [r.study_id for r in train] == ["50000002", "50414267"]
    assert train[1].images == [
        root / "files" / "p10" / "p10000032" / "s50414267" / "a1.jpg",
        root / "files" / "p10" / "p10000032" / "s50414267" / "a2.jpg",
    ]
    assert train[1].report == "Findings of 50414267. No acute process."
    assert train[1].extra["subject_id"] == "10000032"
    assert [r.study_id for r in read_reports(root, "validation")] == ["53189527"]
    assert [r.study_id for r in read_reports(root, "test")] == ["51000001"]


def test_mimic_missing_image_report_and_sections(tmp_path, builders):
    studies = [
        (10000001, 50000001, ["x"], "test"),
        (10000002, 50000002, ["y"], "test"),
        (10000003, 50000003, ["z"], "test"),
    ]
    root = builders.build_mimic(tmp_path, studies, reports={50000003: "WET READ: nothing here"})
    (root / "files/p10/p10000001/s50000001/x.jpg").unlink()
    (root / "files/p10/p10000002/s50000002.txt").unlink()
    with pytest.raises(
        DataError, match=r"split.csv, record 0, id '50000001', field 'dicom_id'.*x.jpg does not exist"
    ):
        read_reports(root, "test")
    rejected = []
    with pytest.raises(EmptySplitError, match=r"test split is empty: of its 3 record\(s\), 3 invalid"):
        read_reports(root, "test", on_invalid="report", rejected=rejected)
    assert [(r.record_id, r.field) for r in rejected] == [
        ("50000001", "dicom_id"),
        ("50000002", "study_id"),
        ("50000003", "FINDINGS/IMPRESSION"),
    ]


def test_extract_sections_of_free_text():
    text = "INDICATION: cough.\n FINDINGS:\n  Lungs are   clear.\n\n IMPRESSION: \n Normal.\n"
    assert extract_sections(text) == {"findings": "Lungs are clear.", "impression": "Normal."}
    assert extract_sections("FINDINGS AND IMPRESSION: Clear.") == {"findings": "Clear.", "impression": ""}
