"""LLaVA conversation JSON (LLaVA-Med fine-tuning format) and LLaVA-Med question JSONL: read them, export to JSON."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from medtune.data.record_checks import (
    as_text,
    build_vqa_record,
    file_error,
    load_json_list,
    missing_field,
    normalise_answer,
    text_problem,
)
from medtune.data.records import OnInvalid, RejectionLog, VQARecord
from medtune.data.run_files import write_text_atomic

IMAGE_PLACEHOLDER = "<image>"
_HUMAN = ("human", "user")
_GPT = ("gpt", "assistant")
# Where LLaVA-Med question files keep a reference answer, in the order looked for.
QUESTION_FILE_ANSWERS = ("answer", "gpt4_answer", "gt_answer")


@dataclass(frozen=True)
class _BadLine:
    """A JSON Lines line that could not be decoded: rejected in file order, with the other lines' problems."""

    reason: str


def _strip_placeholder(text: str) -> str:
    return " ".join(text.replace(IMAGE_PLACEHOLDER, " ").split())


def infer_answer_type(answer: str) -> str:
    """Return CLOSED for a yes/no answer and OPEN otherwise (LLaVA-Med's scorer, where no type is given)."""
    return "CLOSED" if normalise_answer(answer).lower() in ("yes", "no") else "OPEN"


def _turns_problem(turns: object) -> tuple[str, str] | None:
    """Return (field, reason) when conversations is not human/gpt turns ending with gpt, else None."""
    if not isinstance(turns, list) or not turns:
        return "conversations", "needs a non-empty list of alternating human/gpt turns."
    for k, turn in enumerate(turns):
        expected = _HUMAN if k % 2 == 0 else _GPT
        if not isinstance(turn, dict) or missing_field(turn, ("from", "value")) is not None:
            return f"conversations[{k}]", "turns must be {from, value} objects alternating human then gpt."
        if turn["from"] not in expected:
            return (
                f"conversations[{k}]",
                f"turn {k} is from {turn['from']!r}, but turns must alternate human then gpt.",
            )
        problem = text_problem(turn["value"])
        if problem is not None:
            return f"conversations[{k}].value", f"the turn's value {problem}; fix or remove the record."
    if len(turns) % 2:
        return (
            f"conversations[{len(turns) - 1}]",
            "the conversation ends with a human turn that has no gpt answer; every human turn needs the "
            "gpt reply it is trained on, so answer it or remove it.",
        )
    return None


def read_llava_file(
    path: Path, log: RejectionLog, image_folder: Path | None = None, confined: bool = False
) -> list[VQARecord]:
    """Return one record per LLaVA conversation: its last human/gpt pair, the earlier pairs as extra['history'].

    Images resolve against image_folder (the file's folder by default); with confined, a path that
    leaves that folder is rejected.
    """
    folder = image_folder if image_folder is not None else path.parent
    records: list[VQARecord] = []
    seen: set[str] = set()
    for index, row in enumerate(load_json_list(path, log)):
        rid = row.get("id") if isinstance(row, dict) else None
        absent = missing_field(row, ("id", "image", "conversations"))
        if absent is not None:
            log.reject(path, index, rid, absent, f"the record has no {absent!r} field; LLaVA rows need it.")
            continue
        problem = _turns_problem(row["conversations"])
        if problem is not None:
            log.reject(path, index, rid, *problem)
            continue
        image = folder / str(row["image"])
        turns = [as_text(t["value"]) or "" for t in row["conversations"]]
        pairs = [(_strip_placeholder(turns[k]), turns[k + 1]) for k in range(0, len(turns), 2)]
        extra = {k: v for k, v in row.items() if k not in ("id", "image", "conversations", "answer_type")}
        if len(pairs) > 1:  # the context every later turn is trained and asked with
            extra["history"] = [list(pair) for pair in pairs[:-1]]
        question, answer = pairs[-1]
        answer_type = row.get("answer_type")
        if answer_type is None:
            answer_type = infer_answer_type(answer)
            extra["answer_type_inferred"] = True
        record = build_vqa_record(
            log,
            path,
            index,
            str(row["id"]),
            image,
            question,
            answer,
            answer_type,
            "llava",
            extra,
            seen,
            folder if confined else None,
        )
        if record is not None:
            records.append(record)
    return records


def read_llava_json(
    path: str | Path,
    *,
    image_folder: str | Path | None = None,
    on_invalid: OnInvalid = "raise",
    rejected: list | None = None,
) -> list[VQARecord]:
    """Return the VQA records of a LLaVA conversation JSON file (images under image_folder, else the file's folder)."""
    log = RejectionLog(on_invalid, rejected)
    folder = Path(image_folder).expanduser() if image_folder is not None else None
    records = read_llava_file(Path(path), log, folder, confined=folder is not None)
    log.summarise(str(path))
    return records


def _jsonl_rows(path: Path, log: RejectionLog) -> list:
    """Return the values of a JSON Lines file, one per non-blank line (a _BadLine where one cannot be decoded).

    Each line is decoded on its own, so a line with bytes that are not UTF-8, or that does not parse,
    is one record error naming its line, and the others are still read.
    """
    try:
        data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    except OSError as e:
        raise file_error(path, f"cannot be read ({e.strerror or e}).") from None
    lines = [(n, line) for n, line in enumerate(data.split(b"\n")) if line.strip()]
    log.saw(len(lines))
    rows: list = []
    for number, raw in lines:
        try:
            rows.append(json.loads(raw.decode("utf-8")))
            continue
        except UnicodeDecodeError as e:
            reason = (
                f"line {number + 1} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start} "
                "of the line); re-save the file as UTF-8."
            )
        except json.JSONDecodeError as e:
            reason = f"line {number + 1} is not valid JSON ({e.msg} at column {e.colno})."
        except RecursionError:
            reason = f"line {number + 1} nests JSON too deeply to be a question."
        rows.append(_BadLine(reason))
    return rows


def read_question_file(
    path: Path, log: RejectionLog, image_folder: Path | None = None, confined: bool = False
) -> list[VQARecord]:
    """Return the records of a LLaVA-Med question JSONL file (question_id, image, text per line).

    The reference answer comes from the first of answer, gpt4_answer, gt_answer a line has; scoring needs
    one, so a line without any is rejected (the file is for evaluation and prediction, not training).
    """
    folder = image_folder if image_folder is not None else path.parent
    records: list[VQARecord] = []
    seen: set[str] = set()
    for index, row in enumerate(_jsonl_rows(path, log)):
        if isinstance(row, _BadLine):
            log.reject(path, index, None, None, row.reason)
            continue
        rid = row.get("question_id") if isinstance(row, dict) else None
        absent = missing_field(row, ("question_id", "image", "text"))
        if absent is not None:
            log.reject(
                path,
                index,
                rid,
                absent,
                f"the line has no {absent!r} field; LLaVA-Med question files need it.",
            )
            continue
        answer_field = next((f for f in QUESTION_FILE_ANSWERS if row.get(f) is not None), None)
        if answer_field is None:
            log.reject(
                path,
                index,
                rid,
                "answer",
                f"the line has no reference answer (none of {', '.join(QUESTION_FILE_ANSWERS)}); "
                "scoring needs one, so add it.",
            )
            continue
        image = folder / str(row["image"])
        extra = {k: v for k, v in row.items() if k not in ("question_id", "image", "text", "answer_type")}
        answer, answer_type = row[answer_field], row.get("answer_type")
        text = as_text(row["text"])  # a list or NaN goes on as it is, for the record check to reject
        question = _strip_placeholder(text) if text is not None else row["text"]
        if answer_type is None:
            answer_type = infer_answer_type(str(answer))
            extra["answer_type_inferred"] = True
        record = build_vqa_record(
            log,
            path,
            index,
            str(row["question_id"]),
            image,
            question,
            answer,
            answer_type,
            "llava-med",
            extra,
            seen,
            folder if confined else None,
        )
        if record is not None:
            records.append(record)
    return records


def read_llava_questions(
    path: str | Path,
    *,
    image_folder: str | Path | None = None,
    on_invalid: OnInvalid = "raise",
    rejected: list | None = None,
) -> list[VQARecord]:
    """Return the VQA records of a LLaVA-Med question JSONL file (question_id, image, text, an answer)."""
    log = RejectionLog(on_invalid, rejected)
    folder = Path(image_folder).expanduser() if image_folder is not None else None
    records = read_question_file(Path(path), log, folder, confined=folder is not None)
    log.summarise(str(path))
    return records


def write_llava_json(records: list[VQARecord], path: str | Path) -> Path:
    """Write records as a LLaVA conversation JSON list (image paths relative to the file's folder) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    rows = []
    for r in records:
        image = Path(os.path.relpath(Path(r.image).resolve(), base))
        rows.append(
            {
                "id": r.qid,
                "image": image.as_posix(),
                "conversations": [
                    {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{r.question}"},
                    {"from": "gpt", "value": r.answer},
                ],
                "answer_type": r.answer_type,
                "source": r.source,
            }
        )
    return write_text_atomic(path, json.dumps(rows, ensure_ascii=False, indent=1))


def is_question_file(path: Path) -> bool:
    """Return whether a JSONL file's first line is a LLaVA-Med question (question_id and text fields)."""
    try:  # the first line alone: a bad byte further down is that line's record error, not another layout
        with path.open("rb") as f:
            first = next((line for line in f if line.strip()), b"")
        row = json.loads(first.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return isinstance(row, dict) and "question_id" in row and "text" in row
