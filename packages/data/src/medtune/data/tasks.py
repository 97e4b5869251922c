"""Which task a dataset is for (VQA or report generation), and what each record is scored against."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from medtune.data.instructions import REPORT_INFERENCE_INSTRUCTION
from medtune.data.records import DataError, ReportRecord, VQARecord
from medtune.data.reports import detect_report_layout
from medtune.data.splits import LayoutError
from medtune.data.vqa import detect_layout

Task = Literal["vqa", "report"]


class UnknownDataset(LayoutError):
    """No reader knows the dataset (missing, another kind of file, or a folder in no published layout)."""

    def __init__(self, dataset: Path, reason: str, sentence: str):
        super().__init__(dataset, None, reason)
        self.args = (sentence,)  # the whole sentence, naming the flag the dataset was given with


def detect_task(dataset: Path, task: Task | None = None) -> Task:
    """Return the task a dataset's layout is for (only ``task``'s layouts when given); UnknownDataset if none."""
    if not dataset.exists():
        raise UnknownDataset(
            dataset,
            "does not exist",
            f"--dataset {dataset} does not exist; pass a dataset folder or file in its published layout",
        )
    tried: list[str] = []
    file_error: DataError | None = None
    for kind, detect in (("vqa", detect_layout), ("report", detect_report_layout)):
        if task not in (None, kind):
            continue
        try:
            detect(dataset)
            return kind  # type: ignore[return-value]
        except DataError as err:  # the file itself cannot be parsed
            file_error = file_error or err
        except ValueError as err:  # not this layout: the detector says what it expected
            tried.append(str(err).rstrip("."))
    if file_error is not None and dataset.suffix.lower() != ".json":  # e.g. an image or a notes file
        reason = file_error.rejection.reason.rstrip(".")
        raise UnknownDataset(
            dataset,
            reason,
            f"--dataset {dataset} is not a dataset file medtune reads ({reason}); pass the dataset's folder, "
            "or its JSON, JSONL, parquet, Arrow or MIMIC split CSV file",
        )
    if file_error is not None:
        raise file_error
    what = {"vqa": "a VQA dataset (--task vqa)", "report": "a report dataset (--task report)"}.get(
        task or "", "a VQA or a report dataset"
    )
    reason = "; and ".join(tried)
    raise UnknownDataset(dataset, reason, f"cannot read {dataset} as {what}: {reason}")


def answer_fields(records: list[VQARecord | ReportRecord]) -> dict[str, list]:
    """Return the columns predictions are written and scored with: qids, questions, answers, answer_types."""
    is_report = [isinstance(r, ReportRecord) for r in records]
    return {
        "qids": [r.study_id if rep else r.qid for r, rep in zip(records, is_report)],
        "questions": [
            REPORT_INFERENCE_INSTRUCTION if rep else r.question for r, rep in zip(records, is_report)
        ],
        "answers": [r.report if rep else r.answer for r, rep in zip(records, is_report)],
        # The label as the dataset file spells it: the llava-med scorer, like LLaVA-Med's, counts only
        # exactly 'OPEN'/'CLOSED' (a raw 'CLOSED ' is left out); the medtune scorer normalises it.
        "answer_types": [
            "report" if rep else r.extra.get("answer_type_raw", r.answer_type)
            for r, rep in zip(records, is_report)
        ],
    }
