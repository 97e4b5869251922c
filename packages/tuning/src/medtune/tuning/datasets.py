"""Read a run's data with the matching reader: VQA (Slake, VQA-RAD, LLaVA JSON) or reports (OpenI, MIMIC)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from medtune.data import DataError, Rejection, read_reports, read_vqa
from medtune.tuning.errors import UsageError

Task = Literal["vqa", "report"]
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
) -> tuple[Task, list]:
    """Return (task, records) of ``split``; without ``task``, VQA unless the layout is a report dataset.

    With ``on_invalid="report"`` bad records are left out and appended to ``rejected``; a bad record
    otherwise, or a folder no reader recognises, is a UsageError naming it.
    """
    rejected = [] if rejected is None else rejected
    if task != "report":
        try:
            return "vqa", read_vqa(dataset, split, on_invalid=on_invalid, rejected=rejected)
        except DataError as err:  # the layout was recognised: a record is bad, not the task
            raise UsageError(f"{str(err).rstrip('.')}; {INVALID_HINT}") from None
        except (ValueError, FileNotFoundError) as err:
            if task == "vqa":
                raise UsageError(
                    f"cannot read the {split} split of {dataset} as a VQA dataset: {err}"
                ) from None
    rejected.clear()  # nothing from a failed VQA attempt belongs to the report read
    try:
        return "report", read_reports(dataset, split, on_invalid=on_invalid, rejected=rejected)
    except DataError as err:
        raise UsageError(f"{str(err).rstrip('.')}; {INVALID_HINT}") from None
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(
            f"cannot read the {split} split of {dataset} as a VQA or report dataset: {err}"
        ) from None


def format_scores(scores: dict, scorer: str = "medtune") -> str:
    """Return both VQA variants, `scorer` first ('medtune: open 41.2% | ... (llava-med: ...)'), or
    METEOR and ROUGE-L F1 for reports."""
    from medtune.eval import vqa_summary

    if "global" in scores:
        return vqa_summary(scores, scorer)
    return f"METEOR {100 * scores['meteor']:.2f}% | ROUGE-L F1 {100 * scores['rougeL_f1']:.2f}%"
