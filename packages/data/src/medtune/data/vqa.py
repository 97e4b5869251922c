"""read_vqa: one entry point for Slake, VQA-RAD, LLaVA JSON/JSONL and Hugging Face datasets, layout detected."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import datasets

from medtune.data.hf_files import hub_data_files, is_saved_dataset
from medtune.data.hf_vqa import read_hf_split
from medtune.data.llava_json import is_question_file, read_llava_file, read_question_file
from medtune.data.record_cache import cached_read, kept_table
from medtune.data.record_checks import read_json_file
from medtune.data.records import SPLITS, DataError, OnInvalid, RejectionLog, Split, VQARecord
from medtune.data.slake import SPLIT_FILES, read_slake_file, slake_split_file
from medtune.data.splits import LayoutError, missing_split, require_file_split
from medtune.data.vqarad import VQARAD_IMAGES, VQARAD_JSON, read_vqarad_file

# "hf": anything datasets loads (save_to_disk, Hub-style parquet/CSV/JSON); "llava-med": question JSONL.
VQALayout = Literal["slake", "vqa-rad", "llava", "hf", "llava-med"]
_LLAVA_SPLIT_FILES = {
    "train": ("train.json",),
    "validation": ("validation.json", "validate.json", "val.json"),
    "test": ("test.json",),
}


def _peek_layout(path: Path) -> VQALayout | None:
    """Return the layout a JSON file's first record looks like, or None."""
    try:
        data = read_json_file(path)
    except DataError:
        return None
    first = data[0] if isinstance(data, list) and data else None
    if not isinstance(first, dict):
        return None
    if "conversations" in first:
        return "llava"
    if "q_lang" in first or "img_name" in first:
        return "slake"
    if "phrase_type" in first or "image_name" in first:
        return "vqa-rad"
    if "question" in first and "answer" in first:  # a plain table of records: datasets' json builder
        return "hf"
    return None


def _folder_hints(folder: Path) -> str:
    """Return '; found ...' naming what a folder holds, near misses of the expected names, bad JSON."""
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not names:
        return "; the folder is empty."
    expected = [VQARAD_JSON, VQARAD_IMAGES, "imgs", *(n for ns in SPLIT_FILES.values() for n in ns)]
    hints = []
    for name in names:
        if name in expected and (folder / name).is_file():
            problem = _parse_problem(folder / name)
            if problem:
                hints.append(f"{name!r} {problem.rstrip('.')}")
        elif name not in expected:
            # 0.85: 'Publc.json' or 'VQA_RAD image folder' is a slip; R2Gen's 'images' is not Slake's 'imgs'.
            match = difflib.get_close_matches(name, expected, n=1, cutoff=0.85)
            if match:
                hints.append(f"{name!r} looks like a misspelt {match[0]!r}")
    found = ", ".join(repr(n) for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"; found {found}" + "".join(f"; {h}" for h in hints) + "."


def _parse_problem(path: Path) -> str:
    """Return why a JSON file cannot be parsed, or '' when it can."""
    try:
        read_json_file(path)
    except DataError as e:
        return e.rejection.reason
    return ""


def detect_layout(source: Path) -> VQALayout:
    """Return which VQA layout a folder or file is in (raises with the reason when it is none)."""
    if source.is_dir():
        if is_saved_dataset(source):
            return "hf"
        if (source / VQARAD_JSON).is_file():
            return "vqa-rad"
        for names in SPLIT_FILES.values():
            for name in names:
                if (source / name).is_file():
                    found = _peek_layout(source / name)
                    if found is None and (source / "imgs").is_dir():
                        found = "slake"
                    if found is not None:
                        return found
        if hub_data_files(source):
            return "hf"
        raise ValueError(
            f"{source} is not a known VQA layout: expected a Slake 1.0 folder (train.json, validate.json, "
            f"test.json, imgs/), a VQA-RAD folder ({VQARAD_JSON!r} and {VQARAD_IMAGES!r}/) or a folder of "
            f"LLaVA conversation JSON files named by split{_folder_hints(source)}"
        )
    if source.is_file():
        if source.name == VQARAD_JSON:
            return "vqa-rad"
        if source.suffix == ".jsonl":
            return "llava-med" if is_question_file(source) else "hf"
        if source.suffix in (".parquet", ".arrow", ".csv"):
            return "hf"
        found = _peek_layout(source)
        if found is None:
            read_json_file(source)  # a file that does not parse says so
            raise ValueError(
                f"{source}: cannot tell the VQA layout from its first record (no 'conversations', 'q_lang' or "
                "'phrase_type' field; an empty file has none)"
            )
        return found
    raise FileNotFoundError(f"VQA dataset {source} does not exist; pass the dataset folder or a JSON file.")


def _annotation_file(source: Path, split: Split, layout: VQALayout, folder: Path | None) -> Path:
    """Return the file a Slake, VQA-RAD, LLaVA or LLaVA-Med read of split parses (raises when it is missing)."""
    if layout == "slake":
        return slake_split_file(source, split) if source.is_dir() else source
    if layout == "vqa-rad":
        path = source / VQARAD_JSON if source.is_dir() else source
        if folder is None and not (path.parent / VQARAD_IMAGES).is_dir():
            near = difflib.get_close_matches(
                VQARAD_IMAGES, [p.name for p in path.parent.iterdir() if p.is_dir()], n=1, cutoff=0.6
            )
            raise FileNotFoundError(
                f"VQA-RAD image folder {path.parent / VQARAD_IMAGES} does not exist"
                + (f" (there is {near[0]!r}: rename it to {VQARAD_IMAGES!r})" if near else "")
                + "; keep the image folder next to the JSON under that name."
            )
        return path
    if layout == "llava" and source.is_dir():
        names = _LLAVA_SPLIT_FILES[split]
        path = next((source / n for n in names if (source / n).is_file()), None)
        if path is None:
            raise missing_split(source, split, f"no {' or '.join(names)} in the folder")
        return path
    if layout in ("llava", "llava-med"):
        return source
    raise ValueError(
        f"unknown VQA layout {layout!r}; expected 'slake', 'vqa-rad', 'llava', 'llava-med' or 'hf'."
    )


def read_vqa(
    source: str | Path | datasets.Dataset | datasets.DatasetDict,
    split: Split,
    lang: str = "en",
    *,
    on_invalid: OnInvalid = "raise",
    rejected: list | None = None,
    layout: VQALayout | None = None,
    image_folder: str | Path | None = None,
    vqarad_freeform_only: bool = False,
    columns: str | dict[str, str] | None = None,
) -> list[VQARecord]:
    """Return the VQA records of split from a Slake, VQA-RAD, LLaVA or Hugging Face folder or file, or a Dataset.

    A single file is the split its name names (train.json, test.jsonl; asking it for another split is an
    error) or, named for none, whichever split is asked; a VQA-RAD file is split by phrase_type. columns
    maps a datasets table's column names ('question=query,image=img'); image_folder is where images are
    looked up, and an image path may not leave it.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    log = RejectionLog(on_invalid, rejected)
    folder = Path(image_folder).expanduser() if image_folder is not None else None
    if isinstance(source, datasets.Dataset | datasets.DatasetDict):
        path, records = read_hf_split(source, split, log, columns=columns, image_folder=folder, lang=lang)
        log.summarise(path)
        if not records:
            raise log.empty_split(path, split)
        return records
    source = Path(source).expanduser()
    layout = layout or detect_layout(source)
    if columns and layout != "hf":
        raise LayoutError(
            source,
            None,
            f"is a {layout} dataset, whose fields have fixed names; columns (--columns) maps the columns of "
            "a table datasets reads (parquet, CSV, JSON Lines, save_to_disk), so leave it out here.",
        )
    if source.is_file() and layout in ("slake", "llava", "llava-med"):
        require_file_split(source, split)
    if layout == "hf":  # datasets caches these tables itself
        where, records = read_hf_split(source, split, log, columns=columns, image_folder=folder, lang=lang)
        path = Path(where)
    else:
        path = _annotation_file(source, split, layout, folder)
        key = {"layout": layout, "path": path.resolve(), "split": split, "lang": lang}
        key |= {"images": folder and folder.resolve(), "freeform_only": vqarad_freeform_only}

        def read(log: RejectionLog) -> list[VQARecord]:
            log.read_from(path)
            if layout == "slake":
                return read_slake_file(path, lang, log, folder)
            if layout == "vqa-rad":
                return read_vqarad_file(path, split, log, folder, vqarad_freeform_only)
            if layout == "llava":
                return read_llava_file(path, log, folder, confined=folder is not None)
            return read_question_file(path, log, folder, confined=folder is not None)

        records = cached_read("vqa", key, log, read)
    log.summarise(str(path))
    if not records:
        raise log.empty_split(path, split)
    return records


def read_vqa_table(source: str | Path, split: Split, **options) -> datasets.Dataset:
    """Return read_vqa's records of split as a datasets.Dataset (vqa_dataset's columns; ``vqa_record`` decodes
    a row), memory-mapped from the record cache so a second call reads no file again.
    """
    return kept_table("vqa", lambda: read_vqa(source, split, **options))
