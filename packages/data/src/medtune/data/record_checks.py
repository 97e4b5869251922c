"""Checks shared by the readers: a JSON list, required fields, answer text, image paths and images."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from medtune.data.images import image_problem
from medtune.data.records import DataError, Rejection, RejectionLog, VQARecord


def read_json_file(path: Path) -> object:
    """Return the parsed JSON in path (a UTF-8 byte-order mark is allowed); a bad file raises a DataError.

    A file that cannot be parsed is not a record that can be skipped: it always raises, in either
    on_invalid mode, naming the file and what is wrong with it.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise file_error(
            path,
            f"is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start} cannot be decoded); "
            "re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8).",
        ) from None
    except OSError as e:
        raise file_error(path, f"cannot be read ({e.strerror or e}).") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise file_error(
            path,
            f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); fix or re-download the file.",
        ) from None
    except RecursionError:
        raise file_error(
            path, "nests JSON too deeply to be a dataset file; check that the right file was given."
        ) from None


def file_error(path: Path, reason: str) -> DataError:
    """Return the DataError for a whole file that cannot be used (no record, no field)."""
    return DataError(Rejection(str(path), None, None, None, reason))


def load_json_list(path: Path, log: RejectionLog) -> list:
    """Return the top-level JSON list in path; a file that is not a list raises a DataError as a whole."""
    data = read_json_file(path)
    if not isinstance(data, list):
        raise file_error(
            path,
            f"the top level is a JSON {_json_kind(data)}, but this layout needs a list of records; "
            "check that the right file was given.",
        )
    log.saw(len(data))
    return data


def _json_kind(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), "null")


def missing_field(row: object, fields: tuple[str, ...]) -> str | None:
    """Return the first required field absent from row (or '<record>' when row is not an object)."""
    if not isinstance(row, dict):
        return "<record>"
    for name in fields:
        if name not in row or row[name] is None:
            return name
    return None


def as_text(value: object) -> str | None:
    """Return a JSON string or number as text (3.0 -> '3', true -> 'yes'); None for anything else.

    Lists, objects and NaN/infinity have no single textual answer; training on their Python form would
    teach the model '['lung']' or 'nan', so the caller rejects the record instead.
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, (str, int)):
        return value if isinstance(value, str) else str(value)
    return None


def text_problem(value: object) -> str | None:
    """Return why a question or answer value is not usable text, or None when it is."""
    if as_text(value) is not None:
        return None
    if isinstance(value, float):
        return f"is the number {value}, which is not an answer"
    return f"is a JSON {_json_kind(value)} ({json.dumps(value, ensure_ascii=False)[:60]}), but it must be a string or a number"


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


def outside_reason(root: Path, image: Path) -> str | None:
    """Return why ``image`` (``root`` joined with a dataset's image name) lies outside ``root``, or None.

    The check is on the path's text (no symlink is followed), so an image folder that is itself a link
    still works, while '../../x.jpg' or '/etc/x.png' cannot make a dataset read files outside it.
    """
    inside, folder = os.path.abspath(image), os.path.abspath(root)
    if os.path.commonpath([inside, folder]) == folder and inside != folder:
        return None
    return (
        f"the image path {image} lies outside the image folder {root}; image names must be paths relative "
        "to that folder (no '..', not absolute)."
    )


def image_missing_reason(path: Path) -> str | None:
    """Return why path is not a usable image file (missing, or one that does not decode), or None."""
    return image_problem(path)


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
    image_root: Path | None = None,
) -> VQARecord | None:
    """Return a checked VQARecord, or None after rejecting it (the log raises in raise mode).

    With ``image_root``, an image path that leaves that folder is rejected before it is opened.
    """
    if qid in seen:
        log.reject(
            file, index, qid, "qid", "this id appears twice in the file; ids must be unique per split."
        )
        return None
    for name, value in (("question", question), ("answer", answer)):
        problem = text_problem(value)
        if problem is not None:
            log.reject(file, index, qid, name, f"the {name} {problem}; fix or remove the record.")
            return None
    question_text = " ".join(as_text(question).split())  # type: ignore[union-attr]
    if not question_text:
        log.reject(file, index, qid, "question", "the question is empty; fill it in or remove the record.")
        return None
    answer_raw = as_text(answer) or ""
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
    reason = outside_reason(image_root, image) if image_root is not None else None
    reason = reason or image_missing_reason(image)
    if reason is not None:
        log.reject(file, index, qid, "image", reason)
        return None
    seen.add(qid)
    if answer_type != kind:
        extra = {**extra, "answer_type_raw": answer_type}
    return VQARecord(qid, image, question_text, answer_text, kind, answer_raw, source, extra)  # type: ignore[arg-type]
