"""The files of a run directory, by name, and the one atomic write every medtune package uses.

Training writes a run directory, evaluation and the report read it; every package names its files through
this module. It sits in medtune-data because tuning and eval both depend on it (and data writes
``rejected.jsonl`` itself), so the names have one home whichever side reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CONFIG = "config.json"  # the fully resolved run config
METRICS = "metrics.jsonl"  # one line per logged step
ADAPTER = "adapter"  # the tuned tensors and their manifest
PREDICTIONS = "predictions.jsonl"
SCORES = "scores.json"
SCORES_BEFORE = "scores_before.json"  # the base's scores before training
LOSS_PLOT = "loss.png"
CHECKPOINT = "checkpoint"  # the latest --save-every checkpoint
BEST = "best"  # the adapter with the best validation loss
REJECTED = "rejected.jsonl"  # the records left out under --on-bad-record skip
EVAL_PREFIX = "eval-"  # eval-<dataset>-<split>/: a later evaluation of the run


def eval_dir_name(dataset: str, split: str) -> str:
    """Return the sub-directory name ``eval-<dataset>-<split>`` for evaluations of an existing run."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset)
    return f"{EVAL_PREFIX}{safe}-{split}"


def eval_dir_parts(name: str) -> tuple[str, str | None]:
    """Return (dataset, split) read back from an ``eval-<dataset>-<split>`` folder name (split None if absent)."""
    parts = name.removeprefix(EVAL_PREFIX).rsplit("-", 1)
    return parts[0], parts[1] if len(parts) > 1 else None


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary name beside ``path``; renamed to ``path`` when the block succeeds, removed if it fails.

    Readers (and a run resumed after a kill) never see half a file under its final name; the temporary
    name ends in ``.tmp`` and carries the process id, so processes writing the same file do not collide.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path | str, text: str | bytes) -> Path:
    """Return ``path`` after writing ``text`` (str as UTF-8, or bytes) under a temporary name, then renaming."""
    with atomic_path(path) as tmp:
        if isinstance(text, bytes):
            tmp.write_bytes(text)
        else:
            tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: Path | str, data: Any) -> Path:
    """Return ``path`` after writing ``data`` as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: Path | str, rows: Iterable[Any]) -> Path:
    """Return ``path`` after writing one JSON line per row, atomically."""
    return write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
