"""Record types shared by every reader, and the rejection bookkeeping that keeps bad input visible."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

AnswerType = Literal["OPEN", "CLOSED"]
Split = Literal["train", "validation", "test"]
OnInvalid = Literal["raise", "report"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class VQARecord:
    """One image-question-answer pair, normalised across datasets."""

    qid: str
    image: Path
    question: str
    answer: str
    answer_type: AnswerType
    answer_raw: str
    source: str
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReportRecord:
    """One radiology study: its images and its report text."""

    study_id: str
    images: list[Path]
    report: str
    source: str
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    """Why one input record was not turned into a sample."""

    file: str
    index: int | None
    record_id: str | None
    field: str | None
    reason: str

    def message(self) -> str:
        """Return the rejection as one sentence naming file, record and field."""
        where = [self.file]
        if self.index is not None:
            where.append(f"record {self.index}")
        if self.record_id is not None:
            where.append(f"id {self.record_id!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.reason}"


class DataError(ValueError):
    """Raised for bad input data; carries the structured rejection."""

    def __init__(self, rejection: Rejection):
        super().__init__(rejection.message())
        self.rejection = rejection


class RejectionLog:
    """Collects or raises rejections for one read, depending on the on_invalid mode."""

    def __init__(self, on_invalid: OnInvalid = "raise", rejected: list | None = None):
        if on_invalid not in ("raise", "report"):
            raise ValueError(f"on_invalid must be 'raise' or 'report', got {on_invalid!r}.")
        if on_invalid == "report" and rejected is None:
            raise ValueError(
                "on_invalid='report' needs a list passed as rejected=[] to receive the rejected records; "
                "without it they would be lost."
            )
        self.on_invalid = on_invalid
        self.rejected = rejected
        self.count = 0

    def reject(
        self, file: str | Path, index: int | None, record_id: object, field: str | None, reason: str
    ) -> None:
        """Raise a DataError (raise mode) or record the rejection (report mode)."""
        rejection = Rejection(str(file), index, None if record_id is None else str(record_id), field, reason)
        if self.on_invalid == "raise":
            raise DataError(rejection)
        assert self.rejected is not None
        self.rejected.append(rejection)
        self.count += 1

    def summarise(self, what: str) -> None:
        """Log how many records this read rejected (report mode only)."""
        if self.count:
            logger.warning(
                "%s: rejected %d record(s); see the rejections list for each reason.", what, self.count
            )


def write_rejections(rejected: list[Rejection], run_dir: str | Path) -> Path:
    """Write every rejection as one JSON line to run_dir/rejected.jsonl and return that path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "rejected.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rejected:
            f.write(json.dumps({**asdict(r), "message": r.message()}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
