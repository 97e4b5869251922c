"""Which split a source holds: the names a split goes by, split-named files, and the error for a missing one."""

from __future__ import annotations

import re
from pathlib import Path

from medtune.data.records import DataError, Rejection

# The names each split goes by in file names and DatasetDicts (datasets maps val.csv to "validation").
SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "validate", "dev"),
    "test": ("test", "testing"),
}


class LayoutError(DataError):
    """The dataset as a whole lacks what was asked of it (a split, a column); names the file and field."""

    def __init__(self, where: object, field: str | None, reason: str):
        super().__init__(Rejection(str(where), None, None, field, reason))


def file_split(path: Path) -> str | None:
    """Return the split a data file's name names ('train.json', 'test-00000-of-00001.parquet'), or None."""
    for token in re.split(r"[-._ ]+", path.stem.lower()):
        for split, names in SPLIT_NAMES.items():
            if token in names:
                return split
    return None


def missing_split(where: object, split: str, present: str) -> LayoutError:
    """Return the error for a source that has no split (present names what it has instead)."""
    if split == "train":
        todo = "pass the training data's folder or file."
    else:
        todo = (
            "give the evaluation data separately (medtune train --eval-dataset PATH) or ask for a split it "
            "has (medtune eval --split); medtune never scores a model on its own training data silently."
        )
    return LayoutError(where, None, f"has no {split!r} split ({present}); {todo}")


def require_file_split(path: Path, split: str) -> None:
    """Raise a LayoutError when a single file's name names a split other than split ('train.json' for test)."""
    named = file_split(path)
    if named is not None and named != split:
        raise missing_split(path, split, f"the file is the {named} split alone")
