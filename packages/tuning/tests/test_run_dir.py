"""The run directory's writes: one atomic folder replace, leftovers of a kill healed, sentences for bad folders."""

from __future__ import annotations

import os

import pytest

from medtune.tuning.errors import UsageError
from medtune.tuning.run_dir import (
    check_free_space,
    clean_interrupted,
    format_bytes,
    new_run_dir,
    replace_folder,
)


def _folder(path, text):
    path.mkdir()
    (path / "weights").write_text(text)
    return path


def test_replace_folder_survives_the_old_name_a_kill_left(tmp_path):
    _folder(tmp_path / "adapter", "v1")
    _folder(tmp_path / ".adapter.old", "v0")  # a kill between the two renames of an earlier replace
    replace_folder(_folder(tmp_path / ".adapter.tmp", "v2"), tmp_path / "adapter")
    assert (tmp_path / "adapter" / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_clean_interrupted_restores_removes_and_says_so(tmp_path):
    _folder(tmp_path / "best", "complete")
    _folder(tmp_path / ".best.old", "older")
    _folder(tmp_path / ".checkpoint.old", "the only complete checkpoint")
    _folder(tmp_path / ".checkpoint.tmp", "half")
    (tmp_path / "eval-x-test").mkdir()
    (tmp_path / "eval-x-test" / "predictions.jsonl.tmp").write_text("half")
    done = clean_interrupted(tmp_path)
    assert (tmp_path / "checkpoint" / "weights").read_text() == "the only complete checkpoint"
    assert (tmp_path / "best" / "weights").read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "checkpoint", "eval-x-test"]
    assert list((tmp_path / "eval-x-test").iterdir()) == []
    assert len(done) == 4 and any("restored" in line and "checkpoint" in line for line in done)


def test_output_dir_that_is_a_file_or_unwritable(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        new_run_dir(tmp_path / "file", "llava", "ln")
    with pytest.raises(UsageError, match=r"cannot create a run directory under --output-dir .*pass a folder"):
        new_run_dir(tmp_path / "file" / "below", "llava", "ln")
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(UsageError, match="Permission denied"):
            new_run_dir(tmp_path / "ro", "llava", "ln")


def test_free_space_sentence_has_readable_sizes(tmp_path):
    assert [format_bytes(n) for n in (812, 3500, 5 * 2**20, 7.5 * 2**30)] == [
        "812 bytes",
        "3.4 KiB",
        "5.0 MiB",
        "7.5 GiB",
    ]
    with pytest.raises(
        UsageError, match=r"for the adapter in .*: it needs about 931322574.6 GiB and [\d.]+ [GMK]iB are free"
    ):
        check_free_space(tmp_path, 10**18, "adapter")
