"""MIMIC-CXR-JPG reader: mimic-cxr-2.0.0-split.csv(.gz), files/p<NN>/p<subject>/s<study>/<dicom>.jpg, s<study>.txt."""

from __future__ import annotations

from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from medtune.data.record_checks import image_missing_reason, outside_reason
from medtune.data.records import RejectionLog, ReportRecord
from medtune.data.report_sections import compose_report, extract_sections

MIMIC_SPLIT_CSV = ("mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-split.csv.gz")
MIMIC_SPLITS = {"train": "train", "validation": "validate", "test": "test"}
_COLUMNS = {"dicom_id": pa.string(), "study_id": pa.int64(), "subject_id": pa.int64(), "split": pa.string()}


def find_mimic_split_csv(root: Path) -> Path | None:
    """Return the split CSV under a MIMIC-CXR-JPG root, or None when there is none."""
    return next((root / n for n in MIMIC_SPLIT_CSV if (root / n).is_file()), None)


def read_mimic_split_table(path: str | Path) -> pa.Table:
    """Return the split CSV as an Arrow table (dicom_id, study_id, subject_id, split), checking its header."""
    path = Path(path)
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=_COLUMNS))
        names = table.column_names  # decoded here: a non-UTF-8 header fails now, not later
    except (pa.ArrowException, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path}: cannot be read as the MIMIC-CXR split CSV ({type(e).__name__}: {e}); "
            "it needs the columns dicom_id, study_id, subject_id, split."
        ) from None
    absent = [c for c in _COLUMNS if c not in names]
    if absent:
        raise ValueError(f"{path}: missing column(s) {absent}; the MIMIC-CXR split CSV has {list(_COLUMNS)}.")
    return table.select(list(_COLUMNS))


def read_mimic_split_csv(path: str | Path) -> datasets.Dataset:
    """Return the split CSV as an Arrow-backed datasets.Dataset with one row per image."""
    return datasets.Dataset(read_mimic_split_table(path))


def mimic_studies(table: pa.Table, split: str) -> pa.Table:
    """Return one row per study of split (study_id, subject_id, dicom_ids list, first_row), sorted by study_id."""
    wanted = MIMIC_SPLITS[split]
    table = table.append_column("row", pa.array(range(table.num_rows), pa.int64()))
    table = table.filter(pc.equal(table["split"], wanted))
    grouped = table.group_by(["study_id", "subject_id"], use_threads=False).aggregate(
        [("dicom_id", "list"), ("row", "min")]
    )
    grouped = grouped.rename_columns({"dicom_id_list": "dicom_ids", "row_min": "first_row"})
    return grouped.sort_by("study_id")


def mimic_study_folder(root: Path, subject_id: int, study_id: int) -> Path:
    """Return files/p<NN>/p<subject>/s<study> under root (NN = first two digits of the subject id)."""
    subject = str(subject_id)
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study_id}"


def read_mimic(
    root: Path,
    split: str,
    log: RejectionLog,
    reports_root: Path | None = None,
    sections: tuple[str, ...] = ("findings", "impression"),
) -> list[ReportRecord]:
    """Return one record per study of split: its JPGs and the FINDINGS/IMPRESSION of s<study>.txt."""
    csv_path = find_mimic_split_csv(root)
    if csv_path is None:
        raise FileNotFoundError(f"MIMIC-CXR-JPG folder {root} has no {' or '.join(MIMIC_SPLIT_CSV)}.")
    reports_root = reports_root if reports_root is not None else root
    table = read_mimic_split_table(csv_path)
    log.read_from(csv_path)
    studies = mimic_studies(table, split).to_pylist()
    every = len(pc.unique(table["study_id"]))
    log.saw(every)
    log.leave_out(
        f"are listed for another split than {MIMIC_SPLITS[split]!r} in {csv_path.name}", every - len(studies)
    )
    records: list[ReportRecord] = []
    for study in studies:
        study_id, index = str(study["study_id"]), study["first_row"]
        folder = mimic_study_folder(root, study["subject_id"], study["study_id"])
        images = [folder / f"{d}.jpg" for d in study["dicom_ids"]]
        reason = next((outside_reason(folder, i) for i in images if outside_reason(folder, i)), None)
        reason = reason or next((r for r in map(image_missing_reason, images) if r), None)
        if reason is not None:
            log.reject(csv_path, index, study_id, "dicom_id", reason)
            continue
        report_path = mimic_study_folder(reports_root, study["subject_id"], study["study_id"]).with_suffix(
            ".txt"
        )
        if not report_path.is_file():
            log.reject(csv_path, index, study_id, "study_id", f"report file {report_path} does not exist.")
            continue
        log.read_from(report_path)
        try:
            text = report_path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:  # replacing the bytes would train on U+FFFD
            log.reject(
                report_path,
                index,
                study_id,
                "report",
                f"is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); re-save it as UTF-8.",
            )
            continue
        found = extract_sections(text)
        report = compose_report(found, sections)
        if not report:
            log.reject(
                report_path,
                index,
                study_id,
                "/".join(s.upper() for s in sections),
                "the report has no FINDINGS or IMPRESSION text; it has nothing to learn from.",
            )
            continue
        extra = {"subject_id": str(study["subject_id"]), "dicom_ids": list(study["dicom_ids"]), **found}
        records.append(ReportRecord(study_id, images, report, "mimic-cxr", extra))
    return records
