"""Writing predictions fails (full disk, read-only folder) after scoring: one sentence, exit 2, no .tmp left."""

from __future__ import annotations

import errno
import pathlib

import pytest

from medtune.tuning.cli import main

FAST = ["--no-eval-before", "--quiet", "--batch-size", "2", "--max-steps", "1"]
pytestmark = pytest.mark.timeout(300)


def _fail_predictions_writes(monkeypatch, code: int) -> None:
    """Make every write to a temporary predictions file raise OSError(code), as a full or read-only disk does."""
    real_open = pathlib.Path.open

    def open_(self, mode="r", *args, **kwargs):
        if "w" in mode and self.name.endswith(".tmp") and "predictions" in self.name:
            real_open(self, mode, *args, **kwargs).close()  # the temporary file exists when the write fails
            raise OSError(
                code, {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system"}[code]
            )
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", open_)


def _train(dataset, runs, *extra) -> int:
    argv = ["train", "llava", "ln", "--dataset", str(dataset), *FAST, "--output-dir", str(runs), *extra]
    return main(argv)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_eval_whose_predictions_cannot_be_written(small_demo, tmp_path, capsys, monkeypatch, code):
    assert _train(small_demo, tmp_path / "runs", "--no-eval") == 0
    (run,) = (tmp_path / "runs").iterdir()
    _fail_predictions_writes(monkeypatch, code)
    capsys.readouterr()
    assert main(["eval", str(run), "--dataset", str(small_demo), "--quiet"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the loading bars: the one sentence
    assert "Traceback" not in err and last.startswith("medtune eval: error: cannot write the predictions"), (
        err
    )
    assert ("No space left on device" if code == errno.ENOSPC else "Read-only file system") in last
    assert "pass a folder you can write to" in last and str(run) in last
    assert not list(run.rglob("*.tmp")) and not list(run.rglob("predictions.jsonl"))


def test_training_whose_final_predictions_cannot_be_written(small_demo, tmp_path, capsys, monkeypatch):
    _fail_predictions_writes(monkeypatch, errno.ENOSPC)
    assert _train(small_demo, tmp_path / "runs") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "medtune train: error: cannot write the predictions" in err, err
    assert "then score the run again with `medtune eval`" in err
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "adapter").is_dir()  # the training itself was kept
    assert not list(run.rglob("*.tmp")) and not (run / "predictions.jsonl").exists()
