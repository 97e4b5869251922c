"""Seeded random corruptions of valid dataset files: a sentence or a correct count, never a traceback or hang.

Each case corrupts one file of a valid fixture (truncate it, flip or insert bytes, or, for JSON, drop a
key, retype a value, drop or duplicate a record) and reads it in both on_invalid modes. What must hold:
- the read returns, or raises one of the readers' documented errors with a message naming a path;
- in report mode every input row is accounted for: kept, rejected (listed) or left out by a named filter;
- raise mode raises exactly when report mode rejected something, and otherwise returns the same records.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from medtune.data.llava_json import read_llava_file, read_question_file
from medtune.data.mimic import read_mimic
from medtune.data.openi import read_openi_xml_folder
from medtune.data.r2gen import read_r2gen_annotation
from medtune.data.records import DataError, RejectionLog
from medtune.data.slake import read_slake_file
from medtune.data.vqarad import read_vqarad_file

CASES = 200  # per reader; all six readers together stay well under 20 s
EXPECTED = (DataError, ValueError, FileNotFoundError)
ODD_VALUES = (
    None,
    [],
    ["a", "b"],
    {},
    {"k": 1},
    7,
    2.5,
    float("nan"),
    True,
    "",
    " ",
    "../../x.jpg",
    "\u00e4\u00df",
)


def _byte_corruption(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(("truncate", "flip", "insert", "zero"))
    if not data:
        return data
    at = rng.randrange(len(data))
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            k = rng.randrange(len(flipped))
            flipped[k] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if kind == "insert":
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + data[at:]
    return data[:at] + b"\x00" * rng.randint(1, 16) + data[at + 16 :]


def _json_corruption(data: object, rng: random.Random) -> object:
    """Return data with one record changed: a key dropped, a value retyped, a record dropped or doubled."""
    rows = (
        data
        if isinstance(data, list)
        else rng.choice([v for v in data.values() if isinstance(v, list) and v])
    )
    k = rng.randrange(len(rows))
    kind = rng.choice(("drop key", "retype", "retype", "drop record", "double record", "not an object"))
    if kind == "drop key" and isinstance(rows[k], dict) and rows[k]:
        rows[k].pop(rng.choice(sorted(rows[k])))
    elif kind == "retype" and isinstance(rows[k], dict) and rows[k]:
        rows[k][rng.choice(sorted(rows[k]))] = rng.choice(ODD_VALUES)
    elif kind == "drop record":
        rows.pop(k)
    elif kind == "double record":
        rows.insert(k, json.loads(json.dumps(rows[k])))
    else:
        rows[k] = rng.choice(ODD_VALUES)
    return data


def _corrupt(path: Path, rng: random.Random) -> str:
    """Corrupt the file at path in place; return what was done."""
    data = path.read_bytes()
    if path.suffix == ".json" and rng.random() < 0.6:
        parsed = _json_corruption(json.loads(data), rng)
        path.write_text(json.dumps(parsed, ensure_ascii=False), encoding="utf-8")
        return "json"
    if path.suffix == ".jsonl" and rng.random() < 0.6:
        lines = _json_corruption([json.loads(line) for line in data.splitlines()], rng)
        path.write_text("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in lines), encoding="utf-8")
        return "jsonl"
    path.write_bytes(_byte_corruption(data, rng))
    return "bytes"


def _read(read, mode: str):
    """Return (records, log) or (exception, None) of one read in mode."""
    log = RejectionLog(mode, [])
    try:
        return read(log), log
    except EXPECTED as err:
        assert str(err).strip() and "/" in str(err), f"an error without a path: {err!r}"
        return err, None


def _key(record) -> str:
    return repr(record)


def _check_texts(records: list, root: Path, what: str) -> None:
    """Assert no kept record carries a stand-in: a Python repr of a list/dict/None/NaN, or an outside image."""
    for r in records:
        texts = (r.question, r.answer) if hasattr(r, "answer") else (r.report,)
        images = [r.image] if hasattr(r, "image") else list(r.images)
        for text in texts:
            assert isinstance(text, str) and text.strip(), f"{what}: empty text in {r!r}"
            assert text not in ("None", "nan", "inf", "-inf") and not text.startswith(("[", "{")), (
                f"{what}: {text!r}"
            )
        for image in images:
            assert Path(image).resolve().is_relative_to(root.resolve()), (
                f"{what}: image {image} outside {root}"
            )


def _check_case(read, rows_per_record: bool, what: str, root: Path) -> None:
    reported, log = _read(read, "report")
    raised, _ = _read(read, "raise")
    if log is None:  # a whole-file error: it is the same in both modes
        assert isinstance(raised, Exception) and type(raised) is type(reported), what
        return
    _check_texts(reported, root, what)
    record_rejections = sum(1 for r in log.rejected if r.index is not None)
    if rows_per_record:  # one record per input row: every row is kept, rejected or left out by a named filter
        assert len(reported) + record_rejections + sum(log.filtered.values()) == log.rows, what
    if record_rejections:
        assert isinstance(raised, DataError), (
            f"{what}: report mode rejected records but raise mode did not stop"
        )
    else:
        assert not isinstance(raised, Exception), f"{what}: {raised}"
        assert sorted(map(_key, raised)) == sorted(map(_key, reported)), what


def _slake(root: Path, b):
    b.build_slake(root)
    return root / "train.json", lambda log: read_slake_file(root / "train.json", "en", log), True


def _vqarad(root: Path, b):
    b.build_vqarad(root)
    path = root / "VQA_RAD Dataset Public.json"
    return path, lambda log: read_vqarad_file(path, "train", log), True


def _llava(root: Path, b):
    path = b.build_llava(root / "train.json")
    return path, lambda log: read_llava_file(path, log), False  # one row may hold several turn pairs


def _llava_med(root: Path, b):
    lines = [
        {"question_id": 11, "image": "a.jpg", "text": "Is there a mass?\n<image>", "answer": "No"},
        {"question_id": 12, "image": "b.jpg", "text": "What organ?", "gpt4_answer": "The liver."},
        {
            "question_id": 13,
            "image": "a.jpg",
            "text": "Which side?",
            "gt_answer": "left",
            "answer_type": "OPEN",
        },
        {"question_id": 14, "image": "b.jpg", "text": "<image>\nIs it normal?", "answer": "yes"},
    ]
    for name in ("a.jpg", "b.jpg"):
        b.make_image(root / "images" / name, fmt="JPEG")
    path = root / "llava_med_eval_qa50_qa.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    folder = root / "images"
    return path, lambda log: read_question_file(path, log, folder, confined=True), True


def _r2gen(root: Path, b):
    b.build_r2gen(root)
    path = root / "annotation.json"
    return path, lambda log: read_r2gen_annotation(path, "train", log), True


def _openi(root: Path, b):
    reports = {f"CXR{k}": (f"Findings {k}.", "Normal.", [f"CXR{k}_IM-0001-1001"]) for k in range(12)}
    b.build_openi(root, reports)
    folder = root / "ecgen-radiology"
    return sorted(folder.glob("*.xml"))[3], lambda log: read_openi_xml_folder(folder, "train", log), True


def _mimic(root: Path, b):
    studies = [
        (10000000 + k, 50000000 + k, [f"d{k}a", f"d{k}b"], ("train", "validate", "test")[k % 3])
        for k in range(9)
    ]
    b.build_mimic(root, studies)
    return root / "mimic-cxr-2.0.0-split.csv", lambda log: read_mimic(root, "train", log), True


READERS = {
    "slake": _slake,
    "vqa-rad": _vqarad,
    "llava": _llava,
    "llava-med": _llava_med,
    "r2gen": _r2gen,
    "openi": _openi,
    "mimic": _mimic,
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_random_corruptions_never_crash_hang_or_miscount(tmp_path, builders, reader):
    started = time.perf_counter()
    root = tmp_path / "data"
    target, read, rows_per_record = READERS[reader](root, builders)
    images = sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".png"))
    pristine = {p: p.read_bytes() for p in [target, *images]}
    _check_case(read, rows_per_record, f"{reader}: the valid fixture", root)
    rng = random.Random(f"medtune-fuzz-{reader}")
    for case in range(CASES):
        victim = target if rng.random() < 0.8 else rng.choice(images)  # the data file, or one image
        kind = _corrupt(victim, rng)
        _check_case(
            read,
            rows_per_record,
            f"{reader} case {case} ({kind} {victim.name}): {victim.read_bytes()[:300]!r}",
            root,
        )
        victim.write_bytes(pristine[victim])
    assert time.perf_counter() - started < 15, "the fuzz must stay fast"
