"""The record cache: a second read of unchanged data comes from Arrow; any change to what it read is read afresh."""

from __future__ import annotations

import json
import os

import pytest

import medtune.data.mimic as mimic
import medtune.data.vqa as vqa
from medtune.data import read_reports, read_reports_table, read_vqa, read_vqa_table, report_record, vqa_record


@pytest.fixture(autouse=True)
def cache_every_read(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDTUNE_RECORD_CACHE_SECONDS", "0")  # the fixtures read in milliseconds


def entries(tmp_path):
    folder = tmp_path / "cache" / "records"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def forbid(monkeypatch, module, name):
    """Make module.name fail if called: a read served from the cache never reaches the reader."""

    def fail(*args, **kwargs):
        raise AssertionError(f"{name} ran although the cache holds this read")

    monkeypatch.setattr(module, name, fail)


def test_second_read_of_unchanged_slake_comes_from_the_cache(builders, tmp_path, monkeypatch):
    root = builders.build_slake(tmp_path / "slake")
    first = read_vqa(root, "train")
    assert len(entries(tmp_path)) == 1
    forbid(monkeypatch, vqa, "read_slake_file")
    assert read_vqa(root, "train") == first  # same records, field for field (extra and image paths included)


def test_each_split_and_option_has_its_own_entry(builders, tmp_path):
    root = builders.build_slake(tmp_path / "slake")
    english = read_vqa(root, "train")
    both = read_vqa(root, "train", lang="all")
    read_vqa(root, "test")
    assert len(entries(tmp_path)) == 3
    assert len(both) > len(english) and read_vqa(root, "train") == english


def test_an_edited_answer_is_read_afresh(builders, tmp_path):
    root = builders.build_slake(tmp_path / "slake")
    read_vqa(root, "train")
    rows = json.loads((root / "train.json").read_text())
    rows[0]["answer"] = "Liver"
    (root / "train.json").write_text(json.dumps(rows))
    assert read_vqa(root, "train")[0].answer == "Liver"


def test_a_same_size_edit_with_a_new_modification_time_is_read_afresh(builders, tmp_path):
    root = builders.build_slake(tmp_path / "slake")
    read_vqa(root, "train")
    path = root / "train.json"
    text = path.read_text()
    stat = os.stat(path)
    path.write_text(text.replace('"Lung"', '"Lunq"', 1))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert read_vqa(root, "train")[0].answer == "Lunq"


def test_a_replaced_image_is_checked_again(builders, tmp_path):
    root = builders.build_slake(tmp_path / "slake")
    records = read_vqa(root, "train")
    records[0].image.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot be decoded"):
        read_vqa(root, "train")


def test_a_read_with_rejections_is_not_cached_and_reports_them_again(builders, tmp_path):
    rows = [builders.slake_row(0, 0), builders.slake_row(1, 1, question="")]
    root = builders.build_slake(tmp_path / "slake", {"train": rows})
    for _ in range(2):
        rejected = []
        assert len(read_vqa(root, "train", on_invalid="report", rejected=rejected)) == 1
        assert [r.record_id for r in rejected] == ["1"]
    assert entries(tmp_path) == []


def test_a_mimic_report_edited_after_the_first_read_is_read_afresh(builders, tmp_path, monkeypatch):
    root = builders.build_mimic(tmp_path / "mimic", [(10000001, 50000001, ["d1"], "train")])
    assert "Findings of 50000001" in read_reports(root, "train")[0].report
    reader = mimic.read_mimic_split_table
    forbid(monkeypatch, mimic, "read_mimic_split_table")
    assert len(read_reports(root, "train")) == 1  # served from the cache
    monkeypatch.setattr(mimic, "read_mimic_split_table", reader)
    report = root / "files" / "p10" / "p10000001" / "s50000001.txt"
    report.write_text(builders.MIMIC_REPORT.format(findings="A new finding here.", impression="None."))
    assert "A new finding here" in read_reports(root, "train")[0].report


def test_an_openi_file_added_to_the_folder_is_seen(builders, tmp_path):
    reports = {f"CXR{k}": (f"Finding {k}.", "Normal.", [f"CXR{k}_IM-0001-1001"]) for k in range(40)}
    root = builders.build_openi(tmp_path / "openi", reports)
    counts = {split: len(read_reports(root, split)) for split in ("train", "validation", "test")}
    more = {f"CXR{k}": (f"Finding {k}.", "Normal.", [f"CXR{k}_IM-0001-1001"]) for k in range(40, 80)}
    builders.build_openi(tmp_path / "openi", {**reports, **more})
    assert sum(len(read_reports(root, s)) for s in counts) > sum(counts.values())


def test_a_damaged_entry_is_read_afresh_and_replaced(builders, tmp_path):
    root = builders.build_slake(tmp_path / "slake")
    first = read_vqa(root, "train")
    (name,) = entries(tmp_path)
    (tmp_path / "cache" / "records" / name / "inputs.json").write_text("{not json")
    assert read_vqa(root, "train") == first
    assert json.loads((tmp_path / "cache" / "records" / name / "inputs.json").read_text())["kind"] == "vqa"


def test_off_and_fast_reads_write_no_entry(builders, tmp_path, monkeypatch):
    root = builders.build_slake(tmp_path / "slake")
    monkeypatch.setenv("MEDTUNE_RECORD_CACHE_SECONDS", "off")
    read_vqa(root, "train")
    monkeypatch.setenv("MEDTUNE_RECORD_CACHE_SECONDS", "60")  # the default is 1 s: only slow reads pay off
    read_vqa(root, "train")
    assert entries(tmp_path) == []
    monkeypatch.setenv("MEDTUNE_RECORD_CACHE_SECONDS", "soon")
    with pytest.raises(ValueError, match="MEDTUNE_RECORD_CACHE_SECONDS must be a number"):
        read_vqa(root, "train")


def _multi_turn(builders, root):
    builders.make_image(root / "images" / "x.png", fmt="PNG")
    turns = [{"from": "human", "value": "<image>\nwhich organ ?"}, {"from": "gpt", "value": "lung"}]
    turns += [{"from": "human", "value": "is it enlarged ?"}, {"from": "gpt", "value": "no"}]
    path = root / "train.json"
    path.write_text(json.dumps([{"id": "c1", "image": "images/x.png", "conversations": turns}]))
    return path


@pytest.mark.parametrize(
    "layout, build, read",
    [
        ("vqa-rad", lambda b, root: b.build_vqarad(root), read_vqa),
        ("llava multi-turn", _multi_turn, read_vqa),
        ("r2gen", lambda b, root: b.build_r2gen(root), read_reports),
        (
            "mimic",
            lambda b, root: b.build_mimic(root, [(10000001, 50000001, ["d1", "d2"], "train")]),
            read_reports,
        ),
    ],
)
def test_cached_records_equal_a_fresh_read_in_every_layout(
    builders, tmp_path, monkeypatch, layout, build, read
):
    source = build(builders, tmp_path / "data")
    monkeypatch.setenv("MEDTUNE_RECORD_CACHE_SECONDS", "off")
    fresh = read(source, "train")
    monkeypatch.setenv("MEDTUNE_RECORD_CACHE_SECONDS", "0")
    read(source, "train")
    assert len(entries(tmp_path)) == 1
    assert read(source, "train") == fresh  # types too: Path images, lists and dicts in extra


def test_a_read_as_a_table_is_memory_mapped_from_the_cache(builders, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_RECORD_CACHE_SECONDS", "60")  # kept although it is fast
    root = builders.build_slake(tmp_path / "slake")
    table = read_vqa_table(root, "train")
    assert table.cache_files and str(tmp_path / "cache" / "records") in table.cache_files[0]["filename"]
    assert [vqa_record(row) for row in table] == read_vqa(root, "train")
    forbid(monkeypatch, vqa, "read_slake_file")
    assert read_vqa_table(root, "train")["qid"] == table["qid"]  # the second call reads no file again
    mimic_root = builders.build_mimic(tmp_path / "mimic", [(10000001, 50000001, ["d1"], "train")])
    reports = read_reports_table(mimic_root, "train")
    assert reports.cache_files and [report_record(r) for r in reports] == read_reports(mimic_root, "train")


def test_a_table_with_rejected_records_is_built_in_memory_and_lists_them(builders, tmp_path):
    rows = [builders.slake_row(0, 0), builders.slake_row(1, 1, question="")]
    root = builders.build_slake(tmp_path / "slake", {"train": rows})
    rejected = []
    table = read_vqa_table(root, "train", on_invalid="report", rejected=rejected)
    assert table["qid"] == ["0"] and not table.cache_files and [r.record_id for r in rejected] == ["1"]
