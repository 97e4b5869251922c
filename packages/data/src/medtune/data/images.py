"""Lazy image loading: readers only stat files; decoding happens when a batch is built."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from medtune.data.records import OnInvalid, RejectionLog, ReportRecord, VQARecord


class ImageLoadError(OSError):
    """Raised when an image file exists but cannot be decoded."""


def load_image(path: str | Path, record_id: str | None = None) -> Image.Image:
    """Return the image at path decoded as RGB (grey-scale and palette X-rays are converted)."""
    path = Path(path)
    who = f" (record {record_id!r})" if record_id is not None else ""
    try:
        with Image.open(path) as img:
            img.load()
            # X-rays are often 'L', 'I;16' or 'P'; vision towers expect three channels.
            if img.mode == "I;16" or img.mode == "I":
                img = img.point(lambda v: v * (1 / 256)).convert("L")
            return img.convert("RGB")
    except FileNotFoundError as e:
        raise ImageLoadError(
            f"Image file {path}{who} does not exist; it was present when the dataset was read, "
            "so check whether it was moved or deleted."
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(
            f"Image file {path}{who} cannot be decoded ({type(e).__name__}: {e}); "
            "replace the file or remove the record from the dataset."
        ) from e


def check_images(
    records: list[VQARecord] | list[ReportRecord],
    *,
    on_invalid: OnInvalid = "raise",
    rejected: list | None = None,
) -> list:
    """Return the records whose images all decode; others raise or are reported (a full decode pass)."""
    log = RejectionLog(on_invalid, rejected)
    kept = []
    for index, record in enumerate(records):
        paths = [record.image] if isinstance(record, VQARecord) else list(record.images)
        record_id = record.qid if isinstance(record, VQARecord) else record.study_id
        ok = True
        for p in paths:
            try:
                load_image(p, record_id)
            except ImageLoadError as e:
                log.reject(p, index, record_id, "image", str(e))
                ok = False
                break
        if ok:
            kept.append(record)
    log.summarise("image check")
    return kept
