"""Read a run's data with the matching reader: VQA (Slake, VQA-RAD, LLaVA JSON) or reports (OpenI, MIMIC)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from medtune.data import DataError, Rejection, VQARecord, read_reports, read_vqa
from medtune.data.hf_files import is_saved_dataset
from medtune.data.splits import file_split
from medtune.data.tasks import Task, detect_task
from medtune.data.vqa import detect_layout
from medtune.tuning.errors import UsageError

MAX_NEW_TOKENS: dict[str, int] = {"vqa": 8, "report": 128}
INVALID_HINT = (
    "fix that record, or pass --on-invalid report to skip invalid records and list them in rejected.jsonl"
)


def read_records(
    dataset: str | Path,
    split: str,
    task: Task | None = None,
    on_invalid: str = "raise",
    rejected: list[Rejection] | None = None,
    *,
    columns: str | None = None,
    image_folder: str | Path | None = None,
) -> tuple[Task, list]:
    """Return (task, records) of ``split``; without ``task``, the one the dataset's layout is for.

    ``columns`` maps a Hugging Face table's column names ('question=query,image=img'); ``image_folder``
    is where VQA images are looked up (an image path may not leave it).

    With ``on_invalid="report"`` bad records are left out and appended to ``rejected``. A bad record
    otherwise, a file that cannot be parsed, a split left empty, or a folder no reader recognises, is a
    UsageError naming it.
    """
    rejected = [] if rejected is None else rejected
    dataset = Path(dataset).expanduser()
    task = detect_task(dataset, task)
    options = {"columns": columns, "image_folder": image_folder} if task == "vqa" else {}
    reader = read_vqa if task == "vqa" else read_reports
    try:
        records = reader(dataset, split, on_invalid=on_invalid, rejected=rejected, **options)  # type: ignore[operator]
    except DataError as err:  # a user error as it is; one bad record also says how to go on without it
        if err.rejection.index is None:  # a whole file or an empty split: skipping records cannot help
            raise
        raise err.with_hint(INVALID_HINT) from None
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(f"cannot read the {split} split of {dataset}: {err}") from None
    inferred = sum(1 for r in records if isinstance(r, VQARecord) and r.extra.get("answer_type_inferred"))
    if inferred:
        print(
            f"{dataset.name}/{split}: {inferred} of {len(records)} question(s) have no answer type; "
            "yes/no answers are scored as closed, the rest as open"
        )
    return task, records


def eval_layout(source: Path, eval_source: Path, layout: dict) -> dict:
    """Return the column map and image folder to read eval_source with: --dataset's, when it is the same layout.

    --columns and --image-folder describe --dataset; a Slake folder or Hub table given as --eval-dataset
    has its own field names and images, so it is read as published (the run says so).
    """
    if eval_source == source or not any(layout.values()):
        return layout
    # LLaVA-Med's own evaluation pairs its conversation JSON with a question JSONL over one image folder.
    family = {"llava-med": "llava"}
    try:
        kinds = [detect_layout(p) for p in (eval_source, source)]
        same = family.get(kinds[0], kinds[0]) == family.get(kinds[1], kinds[1])
    except (ValueError, FileNotFoundError):  # not a VQA layout: the read itself will say why
        same = False
    if not same:
        given = " and ".join(f"--{k.replace('_', '-')}" for k, v in layout.items() if v)
        print(f"{given} describe --dataset; --eval-dataset {eval_source} is read in its own layout")
    return layout if same else {}


def check_held_out(dataset: Path, task: Task, split: str) -> None:
    """Raise a UsageError when dataset is one VQA file named for no split, or one saved Dataset (not a
    DatasetDict): its test (or validation) split would be its own training data.

    (A VQA-RAD JSON holds both splits, by phrase_type; a file named test.json or train-0.parquet is its split.)
    """
    if task != "vqa":
        return
    lone_table = is_saved_dataset(dataset) and not (dataset / "dataset_dict.json").is_file()
    if not lone_table and (not dataset.is_file() or file_split(dataset) is not None):
        return
    if lone_table or detect_layout(dataset) in ("slake", "llava", "llava-med", "hf"):
        todo = (
            "pass the test data with --eval-dataset PATH, or --no-eval --no-eval-before to train without scoring"
            if split == "test"
            else "drop --eval-every, or pass a folder that holds a validation split"
        )
        what = "one saved Dataset, not a DatasetDict" if lone_table else "one file with no split in its name"
        raise UsageError(
            f"--dataset {dataset} is {what}, so it has no {split} split apart from the training data; {todo}"
        )


def data_fingerprint(records: list, source: Path) -> str:
    """Return a short hash of records' ids, texts and image files (path below ``source`` and size).

    Paths are taken relative to the dataset, so a moved copy of the same data has the same fingerprint
    while an edited answer, an added record or a replaced image changes it.
    """
    digest = hashlib.sha256()
    root = source if source.is_dir() else source.parent
    for record in records:
        images = [record.image] if isinstance(record, VQARecord) else list(record.images)
        texts = (
            (record.qid, record.question, record.answer, record.answer_type)
            if isinstance(record, VQARecord)
            else (record.study_id, record.report)
        )
        digest.update(json.dumps(texts, ensure_ascii=False).encode())
        for image in images:
            try:
                name = Path(image).relative_to(root).as_posix()
            except ValueError:
                name = Path(image).name
            size = os.stat(image).st_size if os.path.exists(image) else -1
            digest.update(f"{name}:{size};".encode())
    return digest.hexdigest()[:16]


def check_generation_flags(batch_size: int, temperature: float, max_new_tokens: int | None) -> None:
    """Raise a UsageError naming the flag when --batch-size, --temperature or --max-new-tokens is out of range."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0 <= temperature < float("inf"):  # NaN fails this too
        raise UsageError(f"--temperature must be 0 (greedy) or a positive, finite number, got {temperature}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")


def in_memory(value: object) -> bool:
    """Return whether value is a datasets.Dataset or DatasetDict (checked without importing datasets)."""
    return type(value).__module__.split(".")[0] == "datasets" and type(value).__name__ in (
        "Dataset",
        "DatasetDict",
    )


def saved_dataset(data, columns: str | None = None, image_folder: str | None = None) -> str:
    """Return a save_to_disk folder holding in-memory ``data`` (a Dataset or DatasetDict), written once per content.

    A run records its settings as JSON and resumes from them, so data handed to the Python API gets a
    path: a folder under the medtune cache named by the datasets fingerprint, which the second run with
    the same data finds instead of writing it again. Image columns of the Image feature are stored as
    bytes; a column of image paths relative to the working directory is made absolute first (without
    --image-folder, a Dataset's paths are read from where the caller stands, a saved folder's from itself).
    """
    import datasets

    from medtune.data.demo import cache_dir
    from medtune.data.hf_vqa import parse_columns

    splits = data if isinstance(data, datasets.DatasetDict) else {"": data}
    digest = hashlib.sha256()
    for name, table in sorted(splits.items()):
        digest.update(f"{name}:{table._fingerprint};".encode())
    image = parse_columns(columns).get("image", "image")
    if image_folder is None:
        digest.update(f"cwd:{Path.cwd()}".encode())
    target = cache_dir() / "datasets" / f"in-memory-{digest.hexdigest()[:16]}"
    if target.is_dir():
        return str(target)

    def absolute(table: datasets.Dataset) -> datasets.Dataset:
        feature = table.features.get(image)
        if image_folder is not None or getattr(feature, "dtype", None) not in ("string", "large_string"):
            return table
        return table.map(
            lambda rows: {image: [str(Path(p).expanduser().absolute()) if p else p for p in rows[image]]},
            batched=True,
            desc="image paths made absolute",
        )

    # A lone Dataset is training data: saved as the train split, so no test split is read from it silently.
    data = datasets.DatasetDict({name or "train": absolute(table) for name, table in splits.items()})
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    data.save_to_disk(str(tmp))
    try:
        tmp.rename(target)
    except OSError:  # another process saved the same data meanwhile: its copy is as good
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
