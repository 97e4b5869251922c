"""Slake 1.0 reader: train.json / validate.json (or validation.json) / test.json and imgs/xmlab<N>/."""

from __future__ import annotations

from pathlib import Path

from medtune.data.record_checks import build_vqa_record, load_json_list, missing_field
from medtune.data.records import RejectionLog, VQARecord

SLAKE_FIELDS = (
    "img_id",
    "img_name",
    "question",
    "answer",
    "q_lang",
    "location",
    "modality",
    "answer_type",
    "base_type",
    "content_type",
    "triple",
    "qid",
)
_REQUIRED = ("qid", "img_name", "question", "answer", "answer_type")
SPLIT_FILES = {
    "train": ("train.json",),
    "validation": ("validate.json", "validation.json"),
    "test": ("test.json",),
}
LANGS = ("en", "zh", "all")


def slake_split_file(root: Path, split: str) -> Path:
    """Return the JSON file holding split under a Slake root (validate.json or validation.json)."""
    for name in SPLIT_FILES[split]:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Slake folder {root} has no {' or '.join(SPLIT_FILES[split])} for split {split!r}; "
        "point at the folder that holds train.json, validate.json, test.json and imgs/."
    )


def read_slake_file(
    path: Path, lang: str, log: RejectionLog, image_root: Path | None = None
) -> list[VQARecord]:
    """Return the records of one Slake split file in language lang ('en', 'zh' or 'all')."""
    if lang not in LANGS:
        raise ValueError(f"Slake language must be one of {LANGS}, got {lang!r}.")
    image_root = image_root if image_root is not None else path.parent / "imgs"
    records: list[VQARecord] = []
    seen: set[str] = set()
    for index, row in enumerate(load_json_list(path, log)):
        rid = row.get("qid") if isinstance(row, dict) else None
        # Language first: a Chinese row must not fail an English read for an unrelated field.
        if missing_field(row, ("q_lang",)) is not None:
            log.reject(path, index, rid, missing_field(row, ("q_lang",)), "the record has no q_lang field.")
            continue
        if row["q_lang"] not in ("en", "zh"):
            log.reject(
                path, index, rid, "q_lang", f"unknown q_lang {row['q_lang']!r}; Slake rows are 'en' or 'zh'."
            )
            continue
        if lang != "all" and row["q_lang"] != lang:
            log.leave_out(f"have q_lang {row['q_lang']!r}, and this read keeps {lang!r} only")
            continue
        absent = missing_field(row, _REQUIRED)
        if absent is not None:
            log.reject(path, index, rid, absent, f"the record has no {absent!r} field; Slake rows need it.")
            continue
        extra = {k: row[k] for k in SLAKE_FIELDS if k in row and k not in ("question", "answer", "qid")}
        extra.update({k: v for k, v in row.items() if k not in SLAKE_FIELDS})
        record = build_vqa_record(
            log,
            path,
            index,
            str(row["qid"]),
            image_root / str(row["img_name"]),
            row["question"],
            row["answer"],
            row["answer_type"],
            "slake",
            extra,
            seen,
            image_root,
        )
        if record is not None:
            records.append(record)
    return records
