"""Checks shared by the readers: a JSON list, required fields, answer normalisation, image existence."""

from __future__ import annotations

import json
from pathlib import Path

from medtune.data.records import RejectionLog, VQARecord


def load_json_list(path: Path, log: RejectionLog) -> list:
    """Return the top-level JSON list in path; a file that is not a list is rejected as a whole."""
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        log.reject(path, None, None, None, f"is not valid JSON ({e}); fix or re-download the file.")
        return []
    if not isinstance(data, list):
        log.reject(
            path,
            None,
            None,
            None,
            f"the top level is a JSON {type(data).__name__}, but this layout needs a list of records; "
            "check that the right file was given.",
        )
        return []
    return data


def missing_field(row: object, fields: tuple[str, ...]) -> str | None:
    """Return the first required field absent from row (or '<record>' when row is not an object)."""
    if not isinstance(row, dict):
        return "<record>"
    for name in fields:
        if name not in row or row[name] is None:
            return name
    return None


def as_text(value: object) -> str:
    """Return a JSON scalar as text: integers and floats from JSON become their decimal string."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def normalise_answer(raw: str) -> str:
    """Return the answer stripped, with yes/no lower-cased (datasets mix 'Yes', 'yes', 'YES ')."""
    answer = " ".join(raw.split())
    if answer.lower() in ("yes", "no"):
        return answer.lower()
    return answer


def normalise_answer_type(raw: object) -> str | None:
    """Return 'OPEN' or 'CLOSED' for raw answer types like 'CLOSED ' or 'open'; None when unknown."""
    if not isinstance(raw, str):
        return None
    value = raw.strip().upper()
    return value if value in ("OPEN", "CLOSED") else None


def image_missing_reason(path: Path) -> str | None:
    """Return why path is not a usable image file (a stat, no decode), or None when it exists."""
    if not path.is_file():
        return f"image file {path} does not exist; check the dataset's image folder."
    return None


def build_vqa_record(
    log: RejectionLog,
    file: Path,
    index: int,
    qid: str,
    image: Path,
    question: object,
    answer: object,
    answer_type: object,
    source: str,
    extra: dict,
    seen: set[str],
) -> VQARecord | None:
    """Return a checked VQARecord, or None after rejecting it (the log raises in raise mode)."""
    if qid in seen:
        log.reject(
            file, index, qid, "qid", "this id appears twice in the file; ids must be unique per split."
        )
        return None
    question_text = " ".join(as_text(question).split())
    if not question_text:
        log.reject(file, index, qid, "question", "the question is empty; fill it in or remove the record.")
        return None
    answer_raw = as_text(answer)
    answer_text = normalise_answer(answer_raw)
    if not answer_text:
        log.reject(file, index, qid, "answer", "the answer is empty; fill it in or remove the record.")
        return None
    kind = normalise_answer_type(answer_type)
    if kind is None:
        log.reject(
            file, index, qid, "answer_type", f"unknown answer_type {answer_type!r}; expected OPEN or CLOSED."
        )
        return None
    reason = image_missing_reason(image)
    if reason is not None:
        log.reject(file, index, qid, "image", reason)
        return None
    seen.add(qid)
    if answer_type != kind:
        extra = {**extra, "answer_type_raw": answer_type}
    return VQARecord(qid, image, question_text, answer_text, kind, answer_raw, source, extra)  # type: ignore[arg-type]
