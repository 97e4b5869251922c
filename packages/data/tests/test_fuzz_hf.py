"""Seeded random corruptions of Hugging Face inputs: a sentence or a correct count, never a traceback or hang.

The two on-disk layouts `read_vqa` takes from `datasets` are corrupted one way per case, each case in a
fresh folder (the datasets cache is keyed by path and mtime, so no case can read another's conversion):
- a Hub-style folder, data/train-00000-of-00001.parquet with image {bytes, path} cells;
- a save_to_disk folder, data-00000-of-00001.arrow beside state.json and dataset_info.json.
A case changes the table (drops or retypes a column, nulls a cell, spoils an image's bytes, drops or
doubles rows), with or without datasets' feature metadata, or the bytes of one file (truncate, flip,
insert, zero). What must hold, in both on_invalid modes:
- the read returns, or raises a DataError whose message names the dataset's path;
- in report mode every row is kept or rejected, and the rows seen are the rows the table holds;
- raise mode raises exactly when report mode rejected something, and otherwise keeps the same records.
"""

from __future__ import annotations

import io
import math
import random
import shutil
import time
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medtune.data.hf_vqa import read_hf_split
from medtune.data.records import DataError, RejectionLog

CASES = 40  # per layout; both layouts together take a few seconds
ROWS = 5
FEATURES = datasets.Features(
    {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
)


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Every case converts into this test's own datasets cache, never the user's."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets.disable_progress_bars()


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12, 10), value).save(buffer, format="PNG")
    return buffer.getvalue()


def _pristine() -> pa.Table:
    answers = ["yes", "lung", "no", "right upper lobe", "2"]
    rows = {
        "image": [{"bytes": _png(40 * k), "path": f"synpic{k}.jpg"} for k in range(ROWS)],
        "question": [f"question {k}?" for k in range(ROWS)],
        "answer": answers[:ROWS],
    }
    return datasets.Dataset.from_dict(rows, features=FEATURES).data.table


def _odd_column(name: str, n: int, rng: random.Random) -> pa.Array:
    """Return a column of n values of a type the column should not have."""
    if name == "image" and rng.random() < 0.5:
        choices = [
            pa.array(
                [rng.choice(["synpic0.jpg", "../../x.jpg", "/etc/hosts", "", "gone.png"]) for _ in range(n)]
            ),
            pa.array([rng.randbytes(rng.randint(0, 64)) for _ in range(n)], pa.binary()),
            pa.array(
                [{"bytes": None, "path": None}] * n,
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            pa.array(
                [{"bytes": _png(9), "path": b"x.png"}] * n,
                pa.struct([("bytes", pa.binary()), ("path", pa.binary())]),
            ),
        ]
        return rng.choice(choices)
    choices = [
        pa.array(range(n), pa.int64()),
        pa.array([rng.choice([0.5, 3.0, math.nan, math.inf, None]) for _ in range(n)], pa.float64()),
        pa.array([rng.random() < 0.5 for _ in range(n)]),
        pa.array([["a", "b"]] * n),
        pa.array([{"k": 1}] * n),
        pa.nulls(n),
        pa.array([b"bytes"] * n, pa.binary()),
        pa.array([rng.choice(["", " ", "\u00e4\u00df", "ok"]) for _ in range(n)]),
    ]
    return rng.choice(choices)


def _table_corruption(table: pa.Table, rng: random.Random) -> tuple[pa.Table, str]:
    """Return table changed one way, and what was done."""
    name = rng.choice(table.column_names)
    k = rng.randrange(table.num_rows)
    kind = rng.choice(("drop column", "retype", "retype", "null cell", "image bytes", "rows"))
    if kind == "drop column":
        return table.drop_columns([name]), f"{kind} {name}"
    if kind == "retype":
        position = table.column_names.index(name)
        return table.set_column(position, name, _odd_column(name, table.num_rows, rng)), f"{kind} {name}"
    if kind == "null cell":
        values = table.column(name).to_pylist()
        values[k] = None
        position = table.column_names.index(name)
        return table.set_column(position, name, pa.array(values, table.schema.field(name).type)), kind
    if kind == "image bytes":
        images = table.column("image").to_pylist()
        good = images[k]["bytes"]
        images[k]["bytes"] = rng.choice([b"", rng.randbytes(200), good[: rng.randrange(len(good))]])
        position = table.column_names.index("image")
        return table.set_column(position, "image", pa.array(images, table.schema.field("image").type)), kind
    rows = rng.choice(("none", "drop", "double"))
    if rows == "none":
        return table.slice(0, 0), "no rows"
    if rows == "drop":
        return pa.concat_tables([table.slice(0, k), table.slice(k + 1)]), "drop a row"
    return pa.concat_tables([table, table.slice(k, 1)]), "double a row"


def _byte_corruption(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data))
    kind = rng.choice(("truncate", "flip", "flip", "insert", "zero"))
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if kind == "insert":
        return data[:at] + rng.randbytes(rng.randint(1, 8)) + data[at:]
    return data[:at] + b"\x00" * rng.randint(1, 16) + data[at + 16 :]


def _write_hub(folder: Path, table: pa.Table) -> list[Path]:
    (folder / "data").mkdir(parents=True)
    pq.write_table(table, folder / "data" / "train-00000-of-00001.parquet")
    return [folder / "data" / "train-00000-of-00001.parquet"]


def _write_saved(folder: Path, table: pa.Table) -> list[Path]:
    try:
        datasets.Dataset(table).save_to_disk(str(folder))
    except (TypeError, ValueError, pa.ArrowException):  # datasets cannot save what its features refuse
        shutil.rmtree(folder, ignore_errors=True)
        datasets.Dataset(table.replace_schema_metadata(None)).save_to_disk(str(folder))
    return sorted(p for p in folder.iterdir() if p.suffix in (".arrow", ".json"))


LAYOUTS = {"hub parquet": _write_hub, "save_to_disk": _write_saved}


def _read(folder: Path, mode: str):
    """Return (records, log) or (error, None) of one read of the train split in mode."""
    log = RejectionLog(mode, [])
    try:
        return read_hf_split(folder, "train", log)[1], log
    except DataError as err:
        assert str(folder) in str(err), f"an error that does not name the dataset: {err}"
        return err, None


def _check_records(records: list, store: Path, what: str) -> None:
    """Assert no kept record carries a stand-in text, and image bytes were stored as a file in the store."""
    for r in records:
        for text in (r.question, r.answer):
            assert isinstance(text, str) and text.strip(), f"{what}: empty text in {r!r}"
            assert text not in ("None", "nan", "inf", "True", "False"), f"{what}: {text!r}"
            assert not text.startswith(("[", "{", "b'")), f"{what}: {text!r}"
        assert Path(r.image).is_file(), f"{what}: {r.image} is no file"
        if "image_name" in r.extra:  # bytes from the table: kept in the image store, named by content
            assert Path(r.image).resolve().is_relative_to(store.resolve()), f"{what}: {r.image}"


def _check_case(folder: Path, rows: int | None, store: Path, what: str) -> None:
    """Check one corrupted folder in both modes; rows is the row count the table holds (None: unknown)."""
    reported, log = _read(folder, "report")
    raised, _ = _read(folder, "raise")
    if log is None:  # a whole-dataset error: it is the same in both modes
        assert isinstance(raised, DataError), (
            f"{what}: report mode stopped with {reported}, raise mode did not"
        )
        return
    _check_records(reported, store, what)
    rejections = sum(1 for r in log.rejected if r.index is not None)
    assert len(reported) + rejections + sum(log.filtered.values()) == log.rows, what
    if rows is not None:
        assert log.rows == rows, f"{what}: {log.rows} rows read of the {rows} the table holds"
    if rejections:
        assert isinstance(raised, DataError), f"{what}: report mode rejected rows but raise mode did not stop"
    else:
        assert not isinstance(raised, Exception), f"{what}: {raised}"
        assert sorted(map(repr, raised)) == sorted(map(repr, reported)), what


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_random_corruptions_never_crash_hang_or_miscount(tmp_path, layout):
    started = time.perf_counter()
    write, pristine = LAYOUTS[layout], _pristine()
    store = tmp_path / "hf-cache" / "medtune-images"
    write(tmp_path / "valid", pristine)
    _check_case(tmp_path / "valid", ROWS, store, f"{layout}: the valid fixture")
    assert len(read_hf_split(tmp_path / "valid", "train", RejectionLog())[1]) == ROWS
    rng = random.Random(f"medtune-fuzz-hf-{layout}")
    for case in range(CASES):
        folder = tmp_path / f"case-{case}"
        if rng.random() < 0.5:
            table, kind = _table_corruption(pristine, rng)
            if rng.random() < 0.5:  # a table written without datasets' features, by pyarrow alone
                table, kind = table.replace_schema_metadata(None), f"{kind}, no features"
            write(folder, table)
            rows = table.num_rows
        else:
            victim = rng.choice(write(folder, pristine))
            victim.write_bytes(_byte_corruption(victim.read_bytes(), rng))
            kind, rows = f"bytes of {victim.name}", ROWS
        _check_case(folder, rows, store, f"{layout} case {case} ({kind})")
    assert time.perf_counter() - started < 30, "the fuzz must stay fast"
