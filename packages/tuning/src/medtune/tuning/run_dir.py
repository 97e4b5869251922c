"""Writing the run directory: creating it, replacing folders whole, healing a kill's leftovers, metrics.jsonl.

The file names are medtune.data.run_files' (evaluation and the report read through the same names).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from medtune.data.run_files import ADAPTER, CHECKPOINT, write_json_atomic, write_text_atomic
from medtune.tuning.errors import UsageError

__all__ = [
    "MetricsLog",
    "check_free_space",
    "clean_interrupted",
    "format_bytes",
    "interrupted_hint",
    "new_run_dir",
    "replace_folder",
    "truncate_metrics",
    "write_json_atomic",
]

# The run directories this process made or resumed, newest last: an interrupt says how to continue it.
_runs: list[Path] = []


def new_run_dir(root: str | Path, family: str, method: str) -> Path:
    """Create and return ``runs/<timestamp>-<family>-<method>/`` (a suffix keeps same-second runs apart)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UsageError(
            f"--output-dir {root} is a file, not a folder; pass the folder run directories go in"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            path = root / f"{stamp}-{family}-{method}{'' if i == 0 else f'-{i}'}"
            try:
                path.mkdir()
                _runs.append(path)
                return path
            except FileExistsError:
                continue
    except OSError as err:
        raise UsageError(
            f"cannot create a run directory under --output-dir {root} ({err.strerror or err}); "
            "pass a folder you can write to"
        ) from None
    raise UsageError(f"could not create a new run directory under {root}: 1000 runs started this second")


def format_bytes(size: float) -> str:
    """Return a byte count as '812 bytes', '3.4 KiB', '1.2 MiB' or '7.5 GiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} bytes"


def check_free_space(folder: Path, needed: int, what: str, flag: str = "--output-dir") -> None:
    """Raise a sentence when ``folder``'s disk (or its nearest existing parent's) has less than ``needed``
    bytes (plus 10%) free; ``flag`` is the option that places the write elsewhere."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed * 1.1:
        raise UsageError(
            f"not enough disk space for the {what} in {folder}: it needs about {format_bytes(needed)} and "
            f"{format_bytes(free)} are free; free some space or pass {flag} on a larger disk "
            "(nothing already saved was replaced)"
        )


def replace_folder(tmp: Path, path: Path) -> Path:
    """Rename the complete folder ``tmp`` to ``path``; a kill at any point leaves ``path`` or ``.path.old`` whole.

    A ``.path.old`` left by an earlier kill is removed first (``path`` is complete then), so the swap
    never meets a non-empty folder under the old name.
    """
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def clean_interrupted(run_dir: Path) -> list[str]:
    """Undo what a kill left mid-write in ``run_dir`` (and its eval folders); return what was done, one line each.

    A ``.X.old`` beside a complete ``X`` is removed; one without ``X`` is renamed back to ``X`` (it is the
    last complete copy); ``*.tmp`` files and folders were never complete and are removed.
    """
    _runs.append(run_dir)
    done: list[str] = []
    folders = [run_dir, *(p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith("."))]
    for folder in folders:
        for entry in sorted(folder.iterdir()):
            name = entry.name
            if name.startswith(".") and name.endswith(".old"):
                final = folder / name[1 : -len(".old")]
                if final.exists():
                    _remove(entry)
                    done.append(f"removed {entry} (a kill left it; {final.name} is complete)")
                else:
                    os.replace(entry, final)
                    done.append(f"restored {final} from {entry.name} (a kill interrupted its replacement)")
            elif name.endswith(".tmp"):
                _remove(entry)
                done.append(f"removed {entry} (an unfinished write)")
    return done


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


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
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))


def interrupted_hint() -> str:
    """Return how to continue the run this process was in when interrupted ('' when it made none)."""
    if not _runs:
        return ""
    run = _runs[-1]
    if (run / ADAPTER).is_dir() and not (run / CHECKPOINT).is_dir():
        return f"; the run in {run} had saved its adapter, so `medtune eval {run}` scores it"
    if (run / CHECKPOINT).is_dir() or (run / f".{CHECKPOINT}.old").is_dir():
        return (
            f"; continue the run with the same command plus --resume {run} "
            "(it restarts from its last checkpoint)"
        )
    return (
        f"; the run in {run} had no checkpoint yet, so start it again (--save-every N writes checkpoints "
        "that --resume can continue from)"
    )
