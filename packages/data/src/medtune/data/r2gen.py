"""R2Gen annotation.json reader (iu_xray and mimic_cxr): {train, val, test} lists of report entries."""

from __future__ import annotations

from pathlib import Path

from medtune.data.record_checks import (
    file_error,
    image_missing_reason,
    missing_field,
    outside_reason,
    read_json_file,
)
from medtune.data.records import RejectionLog, ReportRecord
from medtune.data.report_sections import clean_text

R2GEN_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def read_r2gen_annotation(
    path: Path, split: str, log: RejectionLog, image_root: Path | None = None
) -> list[ReportRecord]:
    """Return the report records of one split of an R2Gen annotation.json (images under images/)."""
    if image_root is None:
        image_root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    data = read_json_file(path)
    key = R2GEN_SPLITS[split]
    if not isinstance(data, dict) or key not in data:
        raise file_error(
            path,
            f"has no {key!r} list; an R2Gen annotation.json is an object with train, val and test lists of reports.",
        )
    rows = data[key]
    if not isinstance(rows, list):
        raise file_error(path, f"the {key!r} entry is a JSON {type(rows).__name__}, not a list of reports.")
    log.saw(len(rows))
    records: list[ReportRecord] = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        rid = row.get("id") if isinstance(row, dict) else None
        absent = missing_field(row, ("id", "report", "image_path"))
        if absent is not None:
            log.reject(path, index, rid, absent, f"the entry has no {absent!r} field; R2Gen entries need it.")
            continue
        study_id = str(row["id"])
        if not isinstance(row["report"], str):
            log.reject(
                path, index, rid, "report", f"the report is a JSON {type(row['report']).__name__}, not text."
            )
            continue
        report = clean_text(row["report"])
        paths = row["image_path"] if isinstance(row["image_path"], list) else [row["image_path"]]
        if not all(isinstance(p, str) and p.strip() for p in paths):
            log.reject(path, index, rid, "image_path", "each image path must be a non-empty string.")
            continue
        if study_id in seen:
            log.reject(path, index, rid, "id", "this id appears twice in the split; ids must be unique.")
            continue
        if not report:
            log.reject(path, index, rid, "report", "the report is empty; fill it in or remove the entry.")
            continue
        if not paths:
            log.reject(path, index, rid, "image_path", "the entry lists no images; each report needs one.")
            continue
        images = [image_root / p for p in paths]
        reason = next((outside_reason(image_root, i) for i in images if outside_reason(image_root, i)), None)
        reason = reason or next((r for r in map(image_missing_reason, images) if r), None)
        if reason is not None:
            log.reject(path, index, rid, "image_path", reason)
            continue
        seen.add(study_id)
        source = "mimic-cxr" if "study_id" in row else "iu-xray"
        extra = {k: v for k, v in row.items() if k not in ("id", "report", "image_path")}
        records.append(ReportRecord(study_id, images, report, source, extra))
    return records
