"""read_reports: one entry point for OpenI/IU X-ray and MIMIC-CXR-JPG, layout detected."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import datasets

from medtune.data.mimic import MIMIC_SPLIT_CSV, find_mimic_split_csv, read_mimic
from medtune.data.openi import OPENI_XML_FOLDER, read_openi_xml_folder
from medtune.data.r2gen import read_r2gen_annotation
from medtune.data.record_cache import cached_read, kept_table
from medtune.data.record_checks import read_json_file
from medtune.data.records import SPLITS, OnInvalid, RejectionLog, ReportRecord, Split

ReportLayout = Literal["r2gen", "openi-xml", "mimic-cxr-jpg"]


def detect_report_layout(source: Path) -> ReportLayout:
    """Return which report layout a folder or file is in (raises naming the expected layouts)."""
    if source.is_file():
        if source.suffix == ".json" and isinstance(read_json_file(source), dict):
            return "r2gen"
        if source.name in MIMIC_SPLIT_CSV:
            return "mimic-cxr-jpg"
    elif source.is_dir():
        if (source / "annotation.json").is_file():
            return "r2gen"
        if find_mimic_split_csv(source) is not None:
            return "mimic-cxr-jpg"
        if (source / OPENI_XML_FOLDER).is_dir() or any(source.glob("*.xml")):
            return "openi-xml"
    else:
        raise FileNotFoundError(f"report dataset {source} does not exist; pass the dataset folder.")
    raise ValueError(
        f"{source} is not a known report layout: expected an R2Gen annotation.json, a MIMIC-CXR-JPG folder "
        f"({MIMIC_SPLIT_CSV[0]} + files/) or an OpenI folder with {OPENI_XML_FOLDER}/ (or *.xml reports)."
    )


def read_reports(
    source: str | Path,
    split: Split,
    *,
    on_invalid: OnInvalid = "raise",
    rejected: list | None = None,
    layout: ReportLayout | None = None,
    image_folder: str | Path | None = None,
    reports_folder: str | Path | None = None,
    sections: tuple[str, ...] = ("findings", "impression"),
) -> list[ReportRecord]:
    """Return the report records of split from an OpenI/IU X-ray or MIMIC-CXR-JPG folder or file."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    source = Path(source).expanduser()
    layout = layout or detect_report_layout(source)
    log = RejectionLog(on_invalid, rejected)
    images = Path(image_folder) if image_folder is not None else None
    reports = Path(reports_folder) if reports_folder is not None else None
    if layout == "r2gen":
        where = source / "annotation.json" if source.is_dir() else source
    elif layout == "openi-xml":
        where = source / OPENI_XML_FOLDER if (source / OPENI_XML_FOLDER).is_dir() else source
    elif layout == "mimic-cxr-jpg":
        root = source if source.is_dir() else source.parent
        where = find_mimic_split_csv(root) or root
    else:
        raise ValueError(
            f"unknown report layout {layout!r}; expected 'r2gen', 'openi-xml' or 'mimic-cxr-jpg'."
        )

    def read(log: RejectionLog) -> list[ReportRecord]:
        if layout == "r2gen":
            log.read_from(where)
            return read_r2gen_annotation(where, split, log, images)
        if layout == "openi-xml":  # it lists the folder and reads each XML file
            return read_openi_xml_folder(where, split, log, images, sections)
        return read_mimic(root, split, log, reports, sections)  # it reads the CSV and each study's report

    key = {"layout": layout, "path": where.resolve(), "split": split, "sections": list(sections)}
    key |= {"images": images and images.resolve(), "reports": reports and reports.resolve()}
    records = cached_read("report", key, log, read)
    log.summarise(str(source))
    if not records:
        raise log.empty_split(where, split)
    return records


def read_reports_table(source: str | Path, split: Split, **options) -> datasets.Dataset:
    """Return read_reports' records of split as a datasets.Dataset (reports_dataset's columns; ``report_record``
    decodes a row), memory-mapped from the record cache so a second call reads no file again.
    """
    return kept_table("report", lambda: read_reports(source, split, **options))
