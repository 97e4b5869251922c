"""OpenI / IU X-ray raw reports: ecgen-radiology/*.xml (FINDINGS / IMPRESSION, parentImage -> <id>.png)."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

from medtune.data.record_checks import image_missing_reason, outside_reason
from medtune.data.records import RejectionLog, ReportRecord
from medtune.data.report_sections import clean_text, compose_report

OPENI_XML_FOLDER = "ecgen-radiology"
OPENI_IMAGE_FOLDERS = ("NLMCXR_png", "images")
# The raw release has no split; R2Gen split IU X-ray 7:1:2, which we reproduce deterministically by id.
OPENI_SPLIT_TENTHS = {"train": range(0, 7), "validation": range(7, 8), "test": range(8, 10)}


def openi_split_of(study_id: str) -> str:
    """Return the split ('train' 70%, 'validation' 10%, 'test' 20%) a raw OpenI report falls in, by id hash."""
    tenth = int(hashlib.sha1(study_id.encode()).hexdigest(), 16) % 10
    return next(name for name, tenths in OPENI_SPLIT_TENTHS.items() if tenth in tenths)


def openi_image_folder(root: Path) -> Path:
    """Return the folder holding the OpenI PNGs next to ecgen-radiology/ (NLMCXR_png/, images/ or root)."""
    for name in OPENI_IMAGE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    return root


def read_openi_xml_folder(
    xml_folder: Path,
    split: str,
    log: RejectionLog,
    image_root: Path | None = None,
    sections: tuple[str, ...] = ("findings", "impression"),
) -> list[ReportRecord]:
    """Return the OpenI reports of split from a folder of ecgen-radiology XML files."""
    image_root = image_root if image_root is not None else openi_image_folder(xml_folder.parent)
    records: list[ReportRecord] = []
    files = sorted(xml_folder.glob("*.xml"))
    log.saw(len(files))
    log.read_from(xml_folder, *files)  # the folder too: a file added or removed changes its listing
    for index, path in enumerate(files):
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, UnicodeDecodeError, LookupError) as e:  # LookupError: an unknown encoding
            log.reject(path, index, path.stem, None, f"is not well-formed XML ({e}); re-extract the archive.")
            continue
        except OSError as e:
            log.reject(path, index, path.stem, None, f"cannot be read ({e.strerror or e}).")
            continue
        uid = root.find("uId")
        study_id = uid.get("id") if uid is not None and uid.get("id") else path.stem
        if openi_split_of(study_id) != split:
            log.leave_out("fall in another split (medtune splits OpenI 7:1:2 by a hash of the report id)")
            continue
        found = {"findings": "", "impression": ""}
        for node in root.iter("AbstractText"):
            label = (node.get("Label") or "").strip().lower()
            if label in found:
                found[label] = clean_text("".join(node.itertext()))
        report = compose_report(found, sections)
        if not report:
            log.reject(
                path,
                index,
                study_id,
                "/".join(s.upper() for s in sections),
                "the report's FINDINGS and IMPRESSION sections are empty; it has no text to learn from.",
            )
            continue
        ids = [node.get("id") for node in root.iter("parentImage") if node.get("id")]
        outside = next((i for i in ids if outside_reason(image_root, image_root / f"{i}.png")), None)
        if outside is not None:
            log.reject(
                path,
                index,
                study_id,
                "parentImage",
                outside_reason(image_root, image_root / f"{outside}.png"),
            )
            continue
        if not ids:
            log.reject(path, index, study_id, "parentImage", "the report references no images.")
            continue
        images = [image_root / f"{i}.png" for i in ids]
        reason = next((r for r in map(image_missing_reason, images) if r), None)
        if reason is not None:
            log.reject(path, index, study_id, "parentImage", reason)
            continue
        records.append(ReportRecord(study_id, images, report, "openi", {**found, "xml": path.name}))
    return records
