"""Keep a slow read's records as Arrow under the medtune cache, so reading the same data again skips the work.

Reading a large set (MIMIC-CXR's 377k studies) parses every annotation and checks every image; the second
run of the same data should start at once. A read whose records are all valid and that took at least
``MEDTUNE_RECORD_CACHE_SECONDS`` (default 1 s; ``off`` disables the cache) is saved with ``save_to_disk``
next to the list of files it depended on: the annotation files, their folders where a reader lists one,
and every image. An entry is used only while each of those files has the size and modification time it
had, and only by the same reader code (the key includes a hash of this package's sources), so an edited
answer, a replaced image or a new reader gives a fresh read. Reads with rejected records are never cached:
the user is still fixing that data, and the rejections must be reported again.

(datasets' own cache keys on the data files alone; these records also depend on image files and on
the reader's filters, so the entry is validated here.)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path

import datasets

from medtune.data.arrow import report_record, reports_dataset, vqa_dataset, vqa_record
from medtune.data.records import RejectionLog, VQARecord

logger = logging.getLogger(__name__)
ENV = "MEDTUNE_RECORD_CACHE_SECONDS"
_META = "inputs.json"
# Set while kept_table reads: every clean read is kept whatever it took, and its entry is noted here.
_KEEP: ContextVar[list[Path] | None] = ContextVar("medtune_kept_entries", default=None)


@functools.cache
def _code_hash() -> str:
    """Return a hash of this package's Python sources: a changed reader never serves an old entry."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _min_seconds() -> float | None:
    """Return how long a read must take to be cached, or None when the cache is off."""
    value = os.environ.get(ENV, "1").strip().lower()
    if value in ("off", "no", "false", "none"):
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        raise ValueError(f"{ENV} must be a number of seconds or 'off', got {value!r}") from None


def _stamp(path: str | Path) -> list | None:
    """Return [size, mtime_ns] of path, or None when it no longer exists."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _entry(key: dict) -> Path:
    from medtune.data.demo import cache_dir

    text = json.dumps([_code_hash(), key], sort_keys=True, default=str)
    return cache_dir() / "records" / hashlib.sha256(text.encode()).hexdigest()[:24]


def _images(records: list) -> list[Path]:
    return [p for r in records for p in ([r.image] if isinstance(r, VQARecord) else r.images)]


def _load(entry: Path) -> list | None:
    """Return the entry's records when every file it depended on is unchanged, else None."""
    try:
        meta = json.loads((entry / _META).read_text())
        if any(_stamp(path) != stamp for path, stamp in meta["inputs"]):
            return None
        table = datasets.load_from_disk(str(entry / "records"))
    except (OSError, ValueError, KeyError, TypeError):  # a damaged entry is read afresh and replaced
        return None
    decode = vqa_record if meta["kind"] == "vqa" else report_record
    return [decode(row) for row in table.to_list()]


def _save(entry: Path, kind: str, records: list, inputs: list[Path]) -> None:
    """Write the entry under a temporary name and rename it into place (a kill leaves no half entry)."""
    stamps = [[str(p), _stamp(p)] for p in dict.fromkeys([*inputs, *_images(records)])]
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    bars = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # the read's own bar (if any) said what is happening
    try:
        (vqa_dataset if kind == "vqa" else reports_dataset)(records).save_to_disk(str(tmp / "records"))
        (tmp / _META).write_text(json.dumps({"kind": kind, "inputs": stamps}))
        shutil.rmtree(entry, ignore_errors=True)  # a stale entry for the same key
        tmp.rename(entry)
    except OSError as err:  # a full or read-only cache only costs the next run its head start
        logger.warning("could not cache the records read (%s); the next run reads them again", err)
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if bars:
            datasets.enable_progress_bars()


def cached_read(kind: str, key: dict, log: RejectionLog, read: Callable[[RejectionLog], list]) -> list:
    """Return ``read(log)``'s records, from the cache when the same read of unchanged files was kept there.

    ``key`` names the read (source, split and every option that changes its records); ``read`` is the
    reader, which names the annotation files it opened with ``log.read_from``.
    """
    least, kept = _min_seconds(), _KEEP.get()
    if least is None:
        return read(log)
    entry = _entry({"kind": kind, **key})
    if entry.is_dir():
        records = _load(entry)
        if records is not None:
            logger.info("%d record(s) read from the cache %s", len(records), entry)
            if kept is not None:
                kept.append(entry)
            return records
    start = time.perf_counter()
    records = read(log)
    if records and not log.count and (kept is not None or time.perf_counter() - start >= least):
        _save(entry, kind, records, log.inputs)
        if kept is not None:
            kept.append(entry)
    return records


def kept_table(kind: str, read_records: Callable[[], list]) -> datasets.Dataset:
    """Return the records ``read_records()`` returns as a datasets.Dataset, memory-mapped from its cache entry.

    The read is kept whatever it took. A read that rejected records, a Hugging Face table and a cache
    turned off give an in-memory Dataset of the same columns instead.
    """
    entries: list[Path] = []
    token = _KEEP.set(entries)
    try:
        records = read_records()
    finally:
        _KEEP.reset(token)
    if entries:
        try:
            return datasets.load_from_disk(str(entries[-1] / "records"))
        except (OSError, ValueError):  # removed meanwhile: the records in hand are as good
            pass
    return (vqa_dataset if kind == "vqa" else reports_dataset)(records)
