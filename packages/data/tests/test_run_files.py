"""The run directory's names and the atomic write every package uses."""

from __future__ import annotations

import json

import pytest

from medtune.data.run_files import (
    atomic_path,
    eval_dir_name,
    eval_dir_parts,
    write_json_atomic,
    write_jsonl_atomic,
)


def test_eval_dir_name_reads_back():
    name = eval_dir_name("vqa rad/v2", "test")
    assert name == "eval-vqa_rad_v2-test"
    assert eval_dir_parts(name) == ("vqa_rad_v2", "test")
    assert eval_dir_parts("eval-slake") == ("slake", None)


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_json_atomic(tmp_path / "scores.json", {"global": 0.5})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"global": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_jsonl_rows_one_per_line(tmp_path):
    path = write_jsonl_atomic(tmp_path / "rejected.jsonl", ({"n": i, "text": "é"} for i in range(3)))
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == [
        {"n": 0, "text": "é"},
        {"n": 1, "text": "é"},
        {"n": 2, "text": "é"},
    ]
