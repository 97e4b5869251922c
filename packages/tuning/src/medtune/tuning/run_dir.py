"""The run directory: config.json, metrics.jsonl, adapter/, predictions.jsonl, scores.json, loss.png."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def new_run_dir(root: str | Path, family: str, method: str) -> Path:
    """Create and return ``runs/<timestamp>-<family>-<method>/`` (a suffix keeps same-second runs apart)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        path = root / f"{stamp}-{family}-{method}{'' if i == 0 else f'-{i}'}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {root}")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary name, then rename it, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class MetricsLog:
    """Appends one JSON line per logged step to metrics.jsonl, flushed as it goes."""

    def __init__(self, path: Path):
        self.path = path
        self._file = path.open("a")

    def write(self, **row: Any) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics.jsonl lines logged after ``step`` (a resumed run logs them again)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)
