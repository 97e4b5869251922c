"""`predictions.jsonl`: one JSON object per question with its prediction and score."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medtune.data.run_files import atomic_path

REQUIRED_FIELDS = ("qid", "question", "answer", "prediction", "answer_type", "n_tokens")


def _check_row(row: Any, where: str) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"{where} is a {type(row).__name__}, not a JSON object; each row must be an object.")
    missing = [name for name in REQUIRED_FIELDS if name not in row]
    if missing:
        raise ValueError(
            f"{where} has no {', '.join(repr(m) for m in missing)} field; each row needs "
            f"{', '.join(REQUIRED_FIELDS)}."
        )
    if not isinstance(row["prediction"], str):
        raise ValueError(f"{where} field 'prediction' is {row['prediction']!r}, not a string.")
    return row


def write_predictions(path: Path | str, rows: Iterable[dict]) -> Path:
    """Return the path after writing `rows` as JSON lines (written to a temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for index, row in enumerate(rows):
            _check_row(row, f"Prediction row {index} for {path}")
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_predictions(path: Path | str) -> list[dict]:
    """Return the rows of a predictions.jsonl file, checking each has the required fields."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No predictions file at {path}; run `medtune eval` on the run to create it.")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{where} is not valid JSON ({error.msg}); fix or delete that line."
                ) from None
            rows.append(_check_row(row, where))
    return rows


def prediction_rows(
    qids: list[Any],
    questions: list[str],
    answers: list[str],
    predictions: list[str],
    answer_types: list[str],
    n_tokens: list[int],
    scores: list[float] | None = None,
) -> list[dict]:
    """Return predictions.jsonl rows zipped from parallel lists (with `score` per row when given)."""
    lengths = {len(qids), len(questions), len(answers), len(predictions), len(answer_types), len(n_tokens)}
    if scores is not None:
        lengths.add(len(scores))
    if len(lengths) != 1:
        raise ValueError(
            f"Prediction columns have different lengths ({len(qids)} qids, {len(questions)} questions, "
            f"{len(answers)} answers, {len(predictions)} predictions, {len(answer_types)} answer types, "
            f"{len(n_tokens)} token counts); pass one entry per question in each."
        )
    rows = []
    for index, values in enumerate(zip(qids, questions, answers, predictions, answer_types, n_tokens)):
        row = dict(zip(REQUIRED_FIELDS, values))
        if scores is not None:
            row["score"] = scores[index]
        rows.append(row)
    return rows
