"""The benchmarks' results files: CSV logs that every run appends to, one set of columns per file.

The scripts import it from this folder (`sys.path`): benchmarks are scripts, not a package.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path


def check_appendable(path: Path, columns: Sequence[str]) -> None:
    """Exit with a sentence when `path` holds a CSV with other columns than `columns` (another version's).

    Scripts call it before measuring, so a long run is not lost to a file it cannot append to.
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    if header != list(columns):
        raise SystemExit(
            f"{path} has the columns {header}, which differ from this script's {list(columns)}; "
            "move it aside or pass another --out."
        )


def append_rows(path: Path, rows: Iterable[dict], columns: Sequence[str]) -> None:
    """Append `rows` (dicts keyed by `columns`) to the CSV at `path`, writing the header when the file is new."""
    check_appendable(path, columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        if new:
            writer.writeheader()
        writer.writerows(rows)
