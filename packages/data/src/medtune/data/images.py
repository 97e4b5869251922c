"""Images: checked once when records are read (so a bad file is a record error), decoded per batch."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medtune.data.records import OnInvalid, RejectionLog, ReportRecord, VQARecord

# What Pillow raises for a file that is not a decodable image: unknown format, truncated data, bad
# chunks, and images so large that decoding them is refused as a decompression bomb.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
# One verdict per file version: Slake asks ~20 questions of each image.
_checked: dict[tuple[str, int, int], str | None] = {}


class ImageLoadError(OSError):
    """Raised when an image file exists but cannot be decoded."""


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """Return img as 8-bit RGB; 16-bit and 32-bit float images are scaled, never clipped to black."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # X-rays are often 16-bit; keep their full range in 8 bits.
        img = img.point(lambda v: v * (1 / 256)).convert("L")
    elif img.mode == "F":
        # Float TIFFs hold e.g. 0..1 or Hounsfield units; a plain convert() would clip them to black.
        values = np.asarray(img, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ValueError("its float pixels include NaN or infinity")
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        img = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    return img.convert("RGB")


def load_image(path: str | Path, record_id: str | None = None) -> Image.Image:
    """Return the image at path decoded as RGB (grey-scale, palette, 16-bit and float images converted)."""
    path = Path(path)
    who = f" (record {record_id!r})" if record_id is not None else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return _to_rgb(img, path)
    except FileNotFoundError as e:
        raise ImageLoadError(
            f"Image file {path}{who} does not exist; it was present when the dataset was read, "
            "so check whether it was moved or deleted."
        ) from e
    except _DECODE_ERRORS as e:
        raise ImageLoadError(
            f"Image file {path}{who} cannot be decoded ({type(e).__name__}: {e}); "
            "replace the file or remove the record from the dataset."
        ) from e


def _verify(path: Path) -> None:
    """Raise one of _DECODE_ERRORS when path is not a complete, decodable image (cheaper than a decode)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if img.format == "PNG":
                img.verify()  # walks every chunk and its CRC without inflating the pixels
                return
            if img.format == "JPEG":
                # A decode costs ~15-40 ms per X-ray (hours for MIMIC-CXR's 377k), so read time checks the
                # structure: the headers parsed, and the end-of-image marker, which a truncated file lacks
                # (0xFFD9 cannot occur inside the entropy-coded data). Damage inside the data is caught when
                # the batch decodes it (ImageLoadError), or up front by check_images.
                img.fp.seek(max(0, os.path.getsize(path) - 1024))
                if b"\xff\xd9" not in img.fp.read():
                    raise OSError("the JPEG has no end-of-image marker, so the file is truncated")
                return
            img.load()
            _to_rgb(img, path)


def image_problem(path: Path) -> str | None:
    """Return why path is not a usable image (missing, empty, undecodable, truncated, too large), or None."""
    try:
        stat = os.stat(path)
    except OSError:
        return f"image file {path} does not exist; check the dataset's image folder."
    if not os.path.isfile(path):
        return f"image path {path} is not a file; check the dataset's image folder."
    if stat.st_size == 0:
        return f"image file {path} is empty (0 bytes); replace it or remove the record."
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _checked:
        try:
            _verify(path)
            _checked[key] = None
        except _DECODE_ERRORS as e:
            _checked[key] = (
                f"image file {path} cannot be decoded ({type(e).__name__}: {e}); replace it or remove the record."
            )
    return _checked[key]


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
