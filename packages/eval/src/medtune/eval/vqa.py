"""Med-VQA accuracy: closed containment, open token recall, strict exact match (DESIGN.md)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from medtune.eval.normalize import answer_tokens

SCORER_VERSION = "medtune-vqa-1: closed=word-containment, open=token-recall, strict=exact-match"
AnswerType = Literal["open", "closed"]
_TYPE_ALIASES: dict[str, AnswerType] = {
    "open": "open",
    "opened": "open",
    "closed": "closed",
    "close": "closed",
}


@dataclass(frozen=True)
class ItemScore:
    """One question's score: `score` is the paper-style value, `exact` the strict one."""

    answer_type: AnswerType
    score: float
    exact: float
    empty_prediction: bool


def normalize_answer_type(answer_type: str, index: int) -> AnswerType:
    """Return "open" or "closed" for a dataset's answer-type label (case and spaces ignored)."""
    key = str(answer_type).strip().lower()
    if key not in _TYPE_ALIASES:
        raise ValueError(
            f"Unknown answer type {answer_type!r} at index {index}; expected 'open' or 'closed' "
            "(case and surrounding spaces are ignored). Fix the answer_type field of that record."
        )
    return _TYPE_ALIASES[key]


def _contains(haystack: list[str], needle: list[str]) -> bool:
    # Word-level containment: "no" must not match inside "normal" or "nodule", which a raw
    # substring test (LLaVA-Med's script) would count as correct.
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def _token_recall(prediction: list[str], answer: list[str]) -> float:
    overlap = Counter(prediction) & Counter(answer)
    return sum(overlap.values()) / len(answer)


def _check_lengths(predictions: list[str], answers: list[str], answer_types: list[str]) -> None:
    if not (len(predictions) == len(answers) == len(answer_types)):
        raise ValueError(
            f"Got {len(predictions)} predictions, {len(answers)} answers and {len(answer_types)} answer "
            "types; they must have the same length, one entry per question, in the same order."
        )
    if not predictions:
        raise ValueError("There are no predictions to score; pass at least one question.")


def score_vqa_per_item(
    predictions: list[str], answers: list[str], answer_types: list[str]
) -> list[ItemScore]:
    """Return one ItemScore per question (closed: 0/1 containment; open: token recall; exact: 0/1)."""
    _check_lengths(predictions, answers, answer_types)
    items = []
    for index, (prediction, answer, raw_type) in enumerate(zip(predictions, answers, answer_types)):
        answer_type = normalize_answer_type(raw_type, index)
        if prediction is None:
            prediction = ""
        pred_tokens, answer_toks = answer_tokens(prediction), answer_tokens(answer)
        empty = not pred_tokens
        exact = float(pred_tokens == answer_toks and not empty)
        if empty:
            score = 0.0  # an empty answer is wrong, and still counted in the denominator
        elif not answer_toks:
            score = exact  # nothing to recall or contain: only an exact (empty) match counts
        elif answer_type == "closed":
            score = float(_contains(pred_tokens, answer_toks))
        else:
            score = _token_recall(pred_tokens, answer_toks)
        items.append(ItemScore(answer_type, score, exact, empty))
    return items


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_vqa(predictions: list[str], answers: list[str], answer_types: list[str]) -> dict:
    """Return open/closed/global accuracy as fractions in [0, 1] (None where a type has no questions),
    their strict exact-match variants, question counts and the scorer version."""
    items = score_vqa_per_item(predictions, answers, answer_types)
    open_items = [item for item in items if item.answer_type == "open"]
    closed_items = [item for item in items if item.answer_type == "closed"]
    return {
        "open": _mean([item.score for item in open_items]),
        "closed": _mean([item.score for item in closed_items]),
        # Micro average over all questions, so the global number weights each question equally.
        "global": _mean([item.score for item in items]),
        "open_exact": _mean([item.exact for item in open_items]),
        "closed_exact": _mean([item.exact for item in closed_items]),
        "global_exact": _mean([item.exact for item in items]),
        "n_open": len(open_items),
        "n_closed": len(closed_items),
        "n_empty_predictions": sum(item.empty_prediction for item in items),
        "scorer_version": SCORER_VERSION,
    }
