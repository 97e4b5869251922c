"""LLaVA conversation JSON (LLaVA-Med fine-tuning format): read it, and export any VQA records to it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from medtune.data.record_checks import build_vqa_record, load_json_list, missing_field, normalise_answer
from medtune.data.records import OnInvalid, RejectionLog, VQARecord

IMAGE_PLACEHOLDER = "<image>"
_HUMAN = ("human", "user")
_GPT = ("gpt", "assistant")


def _strip_placeholder(text: str) -> str:
    return " ".join(text.replace(IMAGE_PLACEHOLDER, " ").split())


def _infer_answer_type(answer: str) -> str:
    # LLaVA-Med's own scorer treats yes/no answers as closed when no type is given.
    return "CLOSED" if normalise_answer(answer) in ("yes", "no") else "OPEN"


def read_llava_file(path: Path, log: RejectionLog, image_folder: Path | None = None) -> list[VQARecord]:
    """Return one record per human/gpt turn pair of a LLaVA conversation JSON list."""
    image_folder = image_folder if image_folder is not None else path.parent
    records: list[VQARecord] = []
    seen: set[str] = set()
    for index, row in enumerate(load_json_list(path, log)):
        rid = row.get("id") if isinstance(row, dict) else None
        absent = missing_field(row, ("id", "image", "conversations"))
        if absent is not None:
            log.reject(path, index, rid, absent, f"the record has no {absent!r} field; LLaVA rows need it.")
            continue
        turns = row["conversations"]
        if not isinstance(turns, list) or not turns or len(turns) % 2:
            log.reject(
                path, index, rid, "conversations", "needs a non-empty list of alternating human/gpt turns."
            )
            continue
        bad = next(
            (
                k
                for k, t in enumerate(turns)
                if not isinstance(t, dict)
                or missing_field(t, ("from", "value")) is not None
                or t["from"] not in (_HUMAN if k % 2 == 0 else _GPT)
            ),
            None,
        )
        if bad is not None:
            log.reject(
                path,
                index,
                rid,
                f"conversations[{bad}]",
                "turns must be {from, value} objects alternating human then gpt.",
            )
            continue
        pairs = len(turns) // 2
        extra = {k: v for k, v in row.items() if k not in ("id", "image", "conversations", "answer_type")}
        for k in range(pairs):
            question, answer = turns[2 * k]["value"], turns[2 * k + 1]["value"]
            qid = str(row["id"]) if pairs == 1 else f"{row['id']}#{k}"
            answer_type = row.get("answer_type")
            if answer_type is None:
                answer_type = _infer_answer_type(str(answer))
                extra = {**extra, "answer_type_inferred": True}
            record = build_vqa_record(
                log,
                path,
                index,
                qid,
                image_folder / str(row["image"]),
                _strip_placeholder(str(question)),
                answer,
                answer_type,
                "llava",
                extra,
                seen,
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
    """Return the VQA records of a LLaVA conversation JSON file (images relative to image_folder or the file's folder)."""
    log = RejectionLog(on_invalid, rejected)
    records = read_llava_file(Path(path), log, Path(image_folder) if image_folder is not None else None)
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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path
