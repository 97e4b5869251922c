"""Find and open a Hugging Face datasets source: a save_to_disk folder, Hub-style data files, one split of them.

Each file datasets or pyarrow cannot parse is a DataError naming it, checked before a table is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.data_files import DataFilesDict, get_data_patterns
from datasets.exceptions import DatasetsError

from medtune.data.record_checks import file_error, read_json_file
from medtune.data.records import DataError
from medtune.data.splits import SPLIT_NAMES, LayoutError, file_split, missing_split

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}
# What datasets and pyarrow raise for files they cannot parse: a truncated or corrupt parquet, Arrow or
# state file, features metadata that names no type, columns that do not match their declared features.
UNREADABLE = (
    pa.ArrowException,
    DatasetsError,
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
)
# While mapping, only a read of the table itself can fail this way (a string column of an unchecked
# Arrow file may hold bytes that are not UTF-8); medtune's own code is not masked.
UNREADABLE_ROWS = (pa.ArrowException, DatasetsError, OSError, UnicodeDecodeError)


def is_saved_dataset(path: Path) -> bool:
    """Return whether path is a folder written by Dataset.save_to_disk or DatasetDict.save_to_disk."""
    return path.is_dir() and (
        (path / "dataset_dict.json").is_file()
        or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file())
    )


def _has_hub_files(folder: Path) -> bool:
    """Return whether folder's top level, data/ or a split-named subfolder holds parquet/arrow or split-named data files.

    A cheap look before datasets' recursive pattern search, which would list a whole MIMIC-CXR tree.
    """
    places = [folder, folder / "data", *(d for d in folder.glob("*/*") if d.is_dir() and file_split(d))]
    places += [d for d in folder.glob("*") if d.is_dir() and file_split(d)]
    for place in places:
        for path in place.glob("*") if place.is_dir() else ():
            if path.suffix in BUILDERS and (path.suffix in (".parquet", ".arrow") or file_split(path)):
                return True
    return False


def hub_data_files(folder: Path) -> dict[str, list[str]]:
    """Return {split: data files} of a Hub-style folder, found by datasets' own split patterns ({} if none)."""
    if not _has_hub_files(folder):
        return {}
    try:
        patterns = get_data_patterns(str(folder))
        found = DataFilesDict.from_local_or_remote(patterns, str(folder), allowed_extensions=list(BUILDERS))
    except FileNotFoundError:  # datasets' EmptyDatasetError, or a split whose files are all images
        return {}
    files = {str(split): list(paths) for split, paths in found.items() if paths}
    # A folder without split names is claimed only for formats no other medtune layout uses (a report
    # dataset's CSV or JSON must still reach its own reader).
    if patterns == {"train": ["**"]} and not all(
        Path(p).suffix in (".parquet", ".arrow") for p in files.get("train", [])
    ):
        return {}
    return files


def load_hf(
    source: Path | datasets.Dataset | datasets.DatasetDict, cache_dir: str | Path | None = None
) -> datasets.Dataset | datasets.DatasetDict:
    """Return source loaded through datasets (load_from_disk or load_dataset); a Dataset is returned as is."""
    if isinstance(source, datasets.Dataset | datasets.DatasetDict):
        return source
    cache = str(cache_dir) if cache_dir is not None else None
    if is_saved_dataset(source):
        _check_saved_json(source)
        with unreadable(source):
            saved = datasets.load_from_disk(str(source))
            # The Arrow files are mapped as they are on disk, unchecked: a corrupt offset would read
            # out of bounds later, so every buffer and string is checked once here (cheap next to a read).
            for table in saved.values() if isinstance(saved, datasets.DatasetDict) else [saved]:
                table.data.table.validate(full=True)
            return saved
    files = {file_split(source) or "train": [str(source)]} if source.is_file() else hub_data_files(source)
    if not files:
        raise LayoutError(
            source, None, "holds no parquet, arrow, CSV or JSON data files that datasets can read as splits."
        )
    kinds = {BUILDERS[Path(p).suffix] for paths in files.values() for p in paths}
    if len(kinds) > 1:
        raise LayoutError(
            source,
            None,
            f"mixes data formats ({', '.join(sorted(kinds))}); keep one format per dataset folder.",
        )
    kind = kinds.pop()
    if kind == "parquet":
        _check_parquet([Path(p) for paths in files.values() for p in paths])
    with unreadable(source):
        return datasets.load_dataset(kind, data_files=files, cache_dir=cache)


def _check_saved_json(folder: Path) -> None:
    """Raise a DataError naming the file when a save_to_disk folder's JSON (state, info, splits) does not parse."""
    names = ("dataset_dict.json", "state.json", "dataset_info.json")
    for path in sorted([*folder.glob("*.json"), *folder.glob("*/*.json")]):
        if path.name in names and not isinstance(read_json_file(path), dict):
            raise file_error(
                path, "is not the JSON object datasets' save_to_disk writes; save the dataset again."
            )


def _check_parquet(paths: list[Path]) -> None:
    """Raise a DataError naming the parquet file whose footer does not parse, or that holds no rows.

    Reading the footers is cheap, and it names the very file; datasets cannot read an empty parquet file
    at all (it fails every split of the folder), so that is said here too.
    """
    for path in paths:
        with unreadable(path):
            rows = pq.read_metadata(path).num_rows
        if rows == 0:
            raise LayoutError(
                path, None, "is a parquet file with no rows; remove it, or write the split's rows into it."
            )


@contextmanager
def unreadable(where: object, errors: tuple[type[Exception], ...] = UNREADABLE) -> Iterator[None]:
    """Turn datasets' or pyarrow's failure to parse the data files under where into a LayoutError naming it."""
    try:
        yield
    except DataError:
        raise
    except errors as err:
        cause = err.__cause__ if isinstance(err, DatasetsError) and err.__cause__ is not None else err
        detail = " ".join(str(cause).split())[:300] or "no detail"
        raise LayoutError(
            where,
            None,
            f"cannot be read as a datasets table ({type(cause).__name__}: {detail}); a data file may be "
            "truncated or corrupt, so re-download or re-export it.",
        ) from None


def select_split(
    data: datasets.Dataset | datasets.DatasetDict, split: str, where: object, single: bool
) -> datasets.Dataset:
    """Return split of a DatasetDict (any of its usual names); a lone Dataset, or a single file, is itself."""
    if isinstance(data, datasets.Dataset):
        return data
    for name in SPLIT_NAMES[split]:
        if name in data:
            return data[name]
    if single and len(data) == 1:  # one file whose name names no split: the caller chose it for this split
        return next(iter(data.values()))
    raise missing_split(where, split, f"it has: {', '.join(map(str, data)) or 'none'}")


def split_files(source: Path, split: str) -> str | None:
    """Return the data file (or files, comma-joined) of split under a Hub-style folder, for messages."""
    if is_saved_dataset(source):
        return None
    files = hub_data_files(source)
    for name in SPLIT_NAMES[split]:
        if name in files:
            return ", ".join(files[name])
    return None
