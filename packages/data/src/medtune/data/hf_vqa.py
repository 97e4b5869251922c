"""Hugging Face `datasets` VQA inputs: a save_to_disk folder, a Hub-style folder of parquet/JSON/CSV files
(the published vqa-rad layout: data/train-*.parquet with an image column of {bytes, path}), or a Dataset.

Loading goes through `datasets` itself, so the Arrow conversion is cached by the files' fingerprint; the
column mapping runs as a cached `Dataset.map`, and image bytes are written once, content-addressed, to a
folder beside the cache, so collators, image checks and predictions.jsonl see a file like every reader's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import datasets
from datasets.fingerprint import Hasher

from medtune.data.hf_files import (
    UNREADABLE_ROWS,
    load_hf,
    select_split,
    split_files,
    unreadable,
)
from medtune.data.llava_json import infer_answer_type
from medtune.data.record_checks import as_text, build_vqa_record, outside_reason
from medtune.data.records import OnInvalid, RejectionLog, VQARecord
from medtune.data.run_files import write_text_atomic
from medtune.data.splits import SPLIT_NAMES, LayoutError, require_file_split

FIELDS = ("question", "answer", "image", "answer_type", "qid")
ID_COLUMNS = ("qid", "question_id", "id")
_MAPPED = datasets.Features(
    {
        name: datasets.Value("string")
        for name in ("qid", "image", "question", "answer", "answer_type", "extra", "problem_field", "problem")
    }
)


def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """Return {field: column} from 'question=q,answer=a' (fields: question, answer, image, answer_type, qid)."""
    if spec is None:
        return {}
    pairs = spec.items() if isinstance(spec, Mapping) else (p.partition("=")[::2] for p in spec.split(","))
    columns: dict[str, str] = {}
    for field, column in pairs:
        field, column = field.strip(), column.strip()
        if not field and not column:
            continue
        if field not in FIELDS or not column:
            raise ValueError(
                f"--columns entry {field}={column} is not FIELD=COLUMN with FIELD one of {', '.join(FIELDS)}; "
                "write e.g. --columns question=query,answer=label,image=img."
            )
        columns[field] = column
    return columns


def _column(names: dict[str, str], field: str, available: list[str], where: object) -> str | None:
    column = names.get(field, field)
    if column in available:
        return column
    if field == "qid" and "qid" not in names:
        return next((c for c in ID_COLUMNS if c in available), None)
    if field in names:
        raise LayoutError(
            where,
            field,
            f"--columns maps {field} to the column {column!r}, which this data does not have "
            f"(columns: {', '.join(available)}); name one of those.",
        )
    if field == "answer_type":
        return None
    hint = f"add --columns {field}=COLUMN naming the column that holds it"
    raise LayoutError(
        where,
        field,
        f"the data has no {field!r} column (columns: {', '.join(available)}); {hint}.",
    )


def _stored_image(data: bytes, name: str | None, store: Path) -> Path:
    """Return the content-addressed file holding data, written once (temp name, then rename)."""
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    suffix = Path(name).suffix.lower() if name else ""
    path = store / digest[:2] / f"{digest}{suffix}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, data)
    return path


def _text(value: object) -> str:
    """Return a cell as text: '' for a missing one (None, or the NaN a CSV reader gives an empty cell).

    Numbers and booleans read as the JSON readers read them (3.0 -> '3', true -> 'yes').
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = as_text(value)
    return str(value) if text is None else text


def _cell_problem(cell: object, column: str, field: str) -> str | None:
    """Return why a question or answer cell is no text (a list, struct, bytes, an infinite number), or None."""
    kind = {list: "list", dict: "struct", bytes: "bytes"}.get(type(cell))
    if kind is not None:
        return (
            f"the {column!r} cell is a {kind}, not text; map {field} to a column of strings (--columns), "
            "or flatten the table first."
        )
    if isinstance(cell, float) and math.isinf(cell):
        return f"the {column!r} cell is the number {cell}, which is not text; fix or remove the row."
    return None


def _image_cell(value: object) -> tuple[str | None, bytes | None, str | None]:
    """Return (path, bytes, problem) of an image cell: {bytes, path}, bytes, or a path string."""
    if isinstance(value, dict):
        name, data = value.get("path"), value.get("bytes")
        name = name if isinstance(name, str) and name else None
        data = data if isinstance(data, bytes) and data else None
    elif isinstance(value, bytes):
        name, data = None, value or None
    elif isinstance(value, str):
        name, data = value or None, None
    elif value is None:
        name, data = None, None
    else:
        return None, None, f"the image cell is {type(value).__name__}, not image bytes or a path."
    if data is None and name is None:
        return None, None, "the record has no image (neither bytes nor a path)."
    return name, data, None


def vqa_columns(
    batch: dict,
    indices: list[int],
    *,
    columns: dict[str, str | None],
    split: str,
    folder: str,
    confined: bool,
    store: str,
) -> dict:
    """Map a batch of any VQA table to medtune's string columns; image bytes become stored files."""
    out: dict[str, list] = {name: [] for name in _MAPPED}
    extra_columns = [c for c in batch if c not in columns.values()]
    for k, index in enumerate(indices):
        name, data, problem = _image_cell(batch[columns["image"]][k])
        image, field = "", "image" if problem else ""
        if data is not None:
            image = str(_stored_image(data, name, Path(store)))
        elif name is not None:
            path = Path(folder) / name
            problem = (outside_reason(Path(folder), path) if confined else None) or ""
            image, field = str(path), "image" if problem else ""
        for text_field in ("question", "answer"):
            cell_problem = _cell_problem(batch[columns[text_field]][k], columns[text_field], text_field)
            if not problem and cell_problem is not None:
                field, problem = text_field, cell_problem
        qid_column = columns.get("qid")
        answer_type = columns.get("answer_type")
        out["qid"].append(str(batch[qid_column][k]) if qid_column else f"{split}-{index}")
        out["image"].append(image)
        out["question"].append(_text(batch[columns["question"]][k]))
        out["answer"].append(_text(batch[columns["answer"]][k]))
        out["answer_type"].append(_text(batch[answer_type][k]) if answer_type else "")
        extra = {c: batch[c][k] for c in extra_columns if not isinstance(batch[c][k], bytes)}
        # the stored file is named by its content: keep the name the table gave it
        if data is not None and name is not None:
            extra["image_name"] = name
        out["extra"].append(json.dumps(extra, ensure_ascii=False, default=str))
        out["problem_field"].append(field)
        out["problem"].append(problem or "")
    return out


def hf_vqa_dataset(
    table: datasets.Dataset,
    split: str,
    where: object,
    *,
    columns: Mapping[str, str] | None = None,
    image_folder: Path,
    confined: bool = False,
    cache_dir: str | Path | None = None,
) -> datasets.Dataset:
    """Return table mapped to string columns qid, image (a file), question, answer, answer_type, extra (cached)."""
    names = dict(columns or {})
    available = list(table.column_names)
    resolved = {field: _column(names, field, available, where) for field in FIELDS}
    image_feature = table.features[resolved["image"]]
    if isinstance(image_feature, datasets.Image):  # keep the bytes; decoding waits for the collator
        table = table.cast_column(resolved["image"], datasets.Image(decode=False))
    elif not (
        (isinstance(image_feature, dict) and "bytes" in image_feature)
        or getattr(image_feature, "dtype", None) in ("string", "large_string", "binary", "large_binary")
    ):
        raise LayoutError(
            where,
            resolved["image"],
            f"the image column holds {image_feature}, not image bytes or paths; "
            "name the right column with --columns image=COLUMN.",
        )
    root = Path(cache_dir) if cache_dir is not None else Path(datasets.config.HF_DATASETS_CACHE)
    kwargs = {
        "columns": resolved,
        "split": split,
        "folder": str(image_folder),
        "confined": confined,
        "store": str(root / "medtune-images"),
    }
    options: dict = {"keep_in_memory": True}
    if table.cache_files:  # Arrow on disk: the mapped table is cached too, keyed by data, code and options
        key = Hasher.hash([table._fingerprint, Hasher.hash(vqa_columns), kwargs])
        (root / "medtune-vqa").mkdir(parents=True, exist_ok=True)
        options = {"cache_file_name": str(root / "medtune-vqa" / f"{key}.arrow"), "new_fingerprint": key}

    def run(reuse: bool) -> datasets.Dataset:
        return table.map(
            vqa_columns,
            batched=True,
            with_indices=True,
            fn_kwargs=kwargs,
            remove_columns=available,
            features=_MAPPED,
            load_from_cache_file=reuse,
            desc=f"reading {split} as VQA",
            **options,
        )

    with unreadable(where, UNREADABLE_ROWS):  # Arrow is read lazily: a corrupt buffer shows only now
        mapped = run(True)
        if "cache_file_name" in options and not all(
            os.path.exists(p) for p in mapped["image"] if p.startswith(kwargs["store"])
        ):  # the image store was cleaned after the table was cached: write the images again
            mapped = run(False)
    return mapped


def hf_records(mapped: datasets.Dataset, where: str, log: RejectionLog, lang: str = "en") -> list[VQARecord]:
    """Return checked VQARecords of a table from hf_vqa_dataset; bad rows raise or are reported.

    A table with Slake's q_lang column keeps the rows in lang ('en', 'zh'; 'all' keeps every row).
    """
    records: list[VQARecord] = []
    seen: set[str] = set()
    log.saw(len(mapped))
    for index, row in enumerate(mapped):
        if row["problem"]:
            log.reject(where, index, row["qid"], row["problem_field"], row["problem"])
            continue
        extra = json.loads(row["extra"])
        if lang != "all" and extra.get("q_lang", lang) != lang:
            log.leave_out(f"have q_lang {extra['q_lang']!r}, and this read keeps {lang!r} only")
            continue
        answer_type = row["answer_type"]
        if not answer_type:
            answer_type = infer_answer_type(row["answer"])
            extra["answer_type_inferred"] = True
        record = build_vqa_record(
            log,
            Path(str(where)),
            index,
            row["qid"],
            Path(row["image"]),
            row["question"],
            row["answer"],
            answer_type,
            "hf",
            extra,
            seen,
        )
        if record is not None:
            records.append(record)
    return records


def read_hf_split(
    source: Path | datasets.Dataset | datasets.DatasetDict,
    split: str,
    log: RejectionLog,
    *,
    columns: str | Mapping[str, str] | None = None,
    image_folder: Path | None = None,
    cache_dir: str | Path | None = None,
    lang: str = "en",
) -> tuple[str, list[VQARecord]]:
    """Return (where, records) of split from a datasets source; where names the split's files for messages."""
    if isinstance(source, datasets.Dataset | datasets.DatasetDict):
        where, base, single = f"<datasets.{type(source).__name__}>", Path.cwd(), False
    else:
        if not source.exists():
            raise FileNotFoundError(f"dataset {source} does not exist; pass a dataset folder or file.")
        where, base, single = str(source), (source if source.is_dir() else source.parent), source.is_file()
        if single:
            require_file_split(source, split)
    table = select_split(load_hf(source, cache_dir), split, where, single)
    if isinstance(source, Path) and source.is_dir():
        where = split_files(source, split) or where
    mapped = hf_vqa_dataset(
        table,
        split,
        where,
        columns=parse_columns(columns),
        image_folder=image_folder if image_folder is not None else base,
        confined=image_folder is not None,
        cache_dir=cache_dir,
    )
    return where, hf_records(mapped, where, log, lang)


def read_hf_vqa(
    source: str | Path | datasets.Dataset | datasets.DatasetDict,
    split: str,
    *,
    columns: str | Mapping[str, str] | None = None,
    image_folder: str | Path | None = None,
    on_invalid: OnInvalid = "raise",
    rejected: list | None = None,
    cache_dir: str | Path | None = None,
    lang: str = "en",
) -> list[VQARecord]:
    """Return the VQA records of split from a save_to_disk folder, a Hub-style folder or file, or a Dataset.

    Without an answer_type column, yes/no answers are CLOSED and the rest OPEN (each record says so in
    extra['answer_type_inferred']). Image paths resolve against image_folder (and may not leave it), else
    against the dataset's folder. Column names differ? Map them: columns='question=query,image=img'.
    A q_lang column (the Hub copies of Slake) keeps the rows in lang, as the Slake reader does.
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {tuple(SPLIT_NAMES)}, got {split!r}.")
    if not isinstance(source, datasets.Dataset | datasets.DatasetDict):
        source = Path(source).expanduser()
    log = RejectionLog(on_invalid, rejected)
    folder = Path(image_folder).expanduser() if image_folder is not None else None
    where, records = read_hf_split(
        source, split, log, columns=columns, image_folder=folder, cache_dir=cache_dir, lang=lang
    )
    log.summarise(where)
    return records
