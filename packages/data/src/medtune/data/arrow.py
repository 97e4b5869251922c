"""Arrow (datasets.Dataset) views of records, so large sets live memory-mapped rather than as Python objects."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from medtune.data.records import ReportRecord, VQARecord

_VQA_FEATURES = datasets.Features(
    {
        name: datasets.Value("string")
        for name in ("qid", "image", "question", "answer", "answer_type", "answer_raw", "source", "extra")
    }
)
_REPORT_FEATURES = datasets.Features(
    {
        "study_id": datasets.Value("string"),
        "images": datasets.Sequence(datasets.Value("string")),
        "report": datasets.Value("string"),
        "source": datasets.Value("string"),
        "extra": datasets.Value("string"),
    }
)


def vqa_dataset(records: list[VQARecord]) -> datasets.Dataset:
    """Return an Arrow dataset with one string column per VQARecord field (extra as a JSON string)."""
    columns: dict[str, list] = {name: [] for name in _VQA_FEATURES}
    for r in records:
        columns["qid"].append(r.qid)
        columns["image"].append(str(r.image))
        columns["question"].append(r.question)
        columns["answer"].append(r.answer)
        columns["answer_type"].append(r.answer_type)
        columns["answer_raw"].append(r.answer_raw)
        columns["source"].append(r.source)
        # extra differs per dataset (and per row); JSON keeps Arrow's schema fixed.
        columns["extra"].append(json.dumps(r.extra, ensure_ascii=False, default=str))
    return datasets.Dataset.from_dict(columns, features=_VQA_FEATURES)


def reports_dataset(records: list[ReportRecord]) -> datasets.Dataset:
    """Return an Arrow dataset with columns study_id, images (list of paths), report, source, extra (JSON)."""
    columns: dict[str, list] = {name: [] for name in _REPORT_FEATURES}
    for r in records:
        columns["study_id"].append(r.study_id)
        columns["images"].append([str(p) for p in r.images])
        columns["report"].append(r.report)
        columns["source"].append(r.source)
        columns["extra"].append(json.dumps(r.extra, ensure_ascii=False, default=str))
    return datasets.Dataset.from_dict(columns, features=_REPORT_FEATURES)


def vqa_record(row: dict) -> VQARecord:
    """Return the VQARecord of one row of a vqa_dataset."""
    return VQARecord(
        row["qid"],
        Path(row["image"]),
        row["question"],
        row["answer"],
        row["answer_type"],
        row["answer_raw"],
        row["source"],
        json.loads(row["extra"]),
    )


def report_record(row: dict) -> ReportRecord:
    """Return the ReportRecord of one row of a reports_dataset."""
    return ReportRecord(
        row["study_id"],
        [Path(p) for p in row["images"]],
        row["report"],
        row["source"],
        json.loads(row["extra"]),
    )
