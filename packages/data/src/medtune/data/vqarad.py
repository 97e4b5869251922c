"""VQA-RAD reader: 'VQA_RAD Dataset Public.json' and 'VQA_RAD Image Folder/' (names with spaces)."""

from __future__ import annotations

from pathlib import Path

from medtune.data.record_checks import build_vqa_record, load_json_list, missing_field
from medtune.data.records import RejectionLog, VQARecord

VQARAD_JSON = "VQA_RAD Dataset Public.json"
VQARAD_IMAGES = "VQA_RAD Image Folder"
TEST_PHRASE_TYPES = frozenset({"test_freeform", "test_para"})
FREEFORM_PHRASE_TYPES = frozenset({"freeform", "para"})
PHRASE_TYPES = TEST_PHRASE_TYPES | FREEFORM_PHRASE_TYPES | {"frame"}
_REQUIRED = ("qid", "phrase_type", "image_name", "question", "answer", "answer_type")


def vqarad_split_selects(phrase_type: str, split: str, freeform_only: bool) -> bool:
    """Return whether a question with this phrase_type belongs to split (test = test_freeform/test_para)."""
    if split == "test":
        return phrase_type in TEST_PHRASE_TYPES
    if split == "train":
        if freeform_only:
            return phrase_type in FREEFORM_PHRASE_TYPES
        return phrase_type not in TEST_PHRASE_TYPES
    raise ValueError(
        "VQA-RAD has no validation split (only train and test, by phrase_type); "
        "use split='train' or split='test'."
    )


def read_vqarad_file(
    path: Path,
    split: str,
    log: RejectionLog,
    image_root: Path | None = None,
    freeform_only: bool = False,
) -> list[VQARecord]:
    """Return the VQA-RAD questions of split; freeform_only keeps free-form + paraphrase (LLaVA-Med's train set)."""
    image_root = image_root if image_root is not None else path.parent / VQARAD_IMAGES
    records: list[VQARecord] = []
    seen: set[str] = set()
    for index, row in enumerate(load_json_list(path, log)):
        rid = row.get("qid") if isinstance(row, dict) else None
        absent = missing_field(row, _REQUIRED)
        if absent is not None:
            log.reject(path, index, rid, absent, f"the record has no {absent!r} field; VQA-RAD rows need it.")
            continue
        phrase_type = str(row["phrase_type"]).strip()
        if phrase_type not in PHRASE_TYPES:
            log.reject(
                path,
                index,
                rid,
                "phrase_type",
                f"unknown phrase_type {row['phrase_type']!r}; VQA-RAD uses {', '.join(sorted(PHRASE_TYPES))}.",
            )
            continue
        if not vqarad_split_selects(phrase_type, split, freeform_only):
            log.leave_out(f"have phrase_type {phrase_type!r}, which is not in the {split} split")
            continue
        extra = {k: v for k, v in row.items() if k not in ("qid", "question", "answer", "answer_type")}
        record = build_vqa_record(
            log,
            path,
            index,
            str(row["qid"]),
            image_root / str(row["image_name"]),
            row["question"],
            row["answer"],
            row["answer_type"],
            "vqa-rad",
            extra,
            seen,
            image_root,
        )
        if record is not None:
            records.append(record)
    return records
