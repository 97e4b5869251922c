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


def test_out_with_a_run_is_refused_not_ignored(tmp_path, capsys):
    run = tmp_path / "run" / "adapter"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    assert (
        main(["eval", str(tmp_path / "run"), "--dataset", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and "is for a base's scores" in err and "leave --out out" in err, err
    assert not (tmp_path / "o").exists()


def test_out_at_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "scores.txt").write_text("")
    argv = ["eval", "--model-path", str(tmp_path / "base"), "--dataset", str(tmp_path), "--out"]
    assert main([*argv, str(tmp_path / "scores.txt")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"--out {tmp_path / 'scores.txt'} is a file, not a folder" in err, err
