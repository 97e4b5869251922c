"""A write of predictions.jsonl that fails (full disk, read-only folder) leaves no temporary file behind."""

from __future__ import annotations

import errno
import io
import pathlib

import pytest

from medtune.eval import prediction_rows, write_predictions


def _rows(n: int) -> list[dict]:
    return prediction_rows(
        [f"q{k}" for k in range(n)],
        ["Is it normal?"] * n,
        ["yes"] * n,
        ["no"] * n,
        ["CLOSED"] * n,
        [1] * n,
    )


class _FillingHandle(io.StringIO):
    """A text file on a disk that is full after ``room`` characters: a later write raises ``code``."""

    def __init__(self, real, room: int, code: int):
        super().__init__()
        self.real, self.room, self.code = real, room, code

    def write(self, text: str) -> int:
        if self.room < len(text):
            raise OSError(
                self.code, "No space left on device" if self.code == errno.ENOSPC else "Read-only file system"
            )
        self.room -= len(text)
        return self.real.write(text)

    def close(self) -> None:
        self.real.close()
        super().close()


@pytest.fixture
def failing_disk(monkeypatch):
    """Make writes to temporary files fail after 200 characters, with ENOSPC unless told otherwise."""
    real_open = pathlib.Path.open
    state = {"code": errno.ENOSPC}

    def open_(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        if "w" in mode and self.name.endswith(".tmp"):
            return _FillingHandle(handle, 200, state["code"])
        return handle

    monkeypatch.setattr(pathlib.Path, "open", open_)
    return state


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_failed_write_leaves_neither_a_tmp_nor_a_partial_file(tmp_path, failing_disk, code):
    failing_disk["code"] = code
    with pytest.raises(OSError) as info:
        write_predictions(tmp_path / "run" / "predictions.jsonl", _rows(20))
    assert info.value.errno == code
    assert list((tmp_path / "run").iterdir()) == []  # some lines were written to the .tmp: it is gone


def test_a_failed_write_keeps_the_previous_predictions(tmp_path, failing_disk):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"earlier": true}\n')
    with pytest.raises(OSError):
        write_predictions(path, _rows(20))
    assert path.read_text() == '{"earlier": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]


def test_a_write_that_fits_is_complete(tmp_path, failing_disk):
    path = write_predictions(tmp_path / "predictions.jsonl", _rows(1))  # one row fits in 200 characters
    assert path.read_text().count("\n") == 1 and not list(tmp_path.glob("*.tmp"))
