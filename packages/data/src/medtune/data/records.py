"""Record types shared by every reader, and the rejection bookkeeping that keeps bad input visible."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from medtune.data.run_files import REJECTED, write_jsonl_atomic

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

    def with_hint(self, hint: str) -> DataError:
        """Return the same error with ``hint`` (what the user can do about it) after its sentence."""
        hinted = type(self).__new__(type(self))
        DataError.__init__(hinted, self.rejection)
        hinted.args = (f"{self.rejection.message().rstrip('.')}; {hint}",)
        return hinted


class EmptySplitError(DataError):
    """Raised when a split has no records left: an empty file, a filter that kept none, or none valid."""


class RejectionLog:
    """Collects or raises rejections for one read, depending on the on_invalid mode.

    It also counts the rows a reader saw and those it left out on purpose (another language, another
    split), so that an empty result can say which filter emptied it.
    """

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
        self.rows = 0
        self.filtered: dict[str, int] = {}
        self.first: Rejection | None = None
        self.inputs: list[Path] = []

    def read_from(self, *paths: Path) -> None:
        """Note files (or listed folders) the records were read from: a cached copy is valid while they are unchanged."""
        self.inputs.extend(Path(p) for p in paths)

    def saw(self, rows: int) -> None:
        """Count ``rows`` more input rows examined."""
        self.rows += rows

    def leave_out(self, why: str, rows: int = 1) -> None:
        """Count ``rows`` rows left out on purpose, grouped by ``why`` (e.g. "have q_lang 'zh'")."""
        if rows > 0:
            self.filtered[why] = self.filtered.get(why, 0) + rows

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
        self.first = self.first or rejection

    def empty_split(self, file: str | Path, split: str) -> EmptySplitError:
        """Return the error for a read of ``split`` from ``file`` that kept no record, saying what emptied it."""
        what = f"the {split} split is empty"
        if self.rows == 0:
            reason = f"{what}: the file holds no records"
        else:
            parts = [f"{n} {why}" for why, n in sorted(self.filtered.items(), key=lambda kv: -kv[1])]
            if self.count:
                parts.append(
                    f"{self.count} invalid (the first: {self.first.message() if self.first else '?'})"
                )
            reason = f"{what}: of its {self.rows} record(s), {'; '.join(parts)}"
        return EmptySplitError(
            Rejection(
                str(file), None, None, None, f"{reason}; training and scoring need at least one record."
            )
        )

    def summarise(self, what: str) -> None:
        """Log how many records this read rejected (report mode only)."""
        if self.count:
            logger.warning(
                "%s: rejected %d of %d record(s); see the rejections list for each reason.",
                what,
                self.count,
                self.rows,
            )


def write_rejections(rejected: list[Rejection], run_dir: str | Path) -> Path:
    """Write every rejection as one JSON line to run_dir/rejected.jsonl and return that path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return write_jsonl_atomic(run_dir / REJECTED, ({**asdict(r), "message": r.message()} for r in rejected))
