"""Med-VQA accuracy in two variant families, both always computed (DESIGN.md, README of medtune-eval).

`medtune` (the corrected scorer, the top-level keys): closed = the answer's words appear as whole words
in the prediction, open = recall of the answer's tokens with repeats clipped, strict = exact match, and
Chinese/Japanese text matched character by character. `llava-med` (`llava_med.py`): LLaVA-Med's batch
scorer reproduced exactly, so its numbers can sit beside published LLaVA-Med ones.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from medtune.eval.inputs import as_text_list, check_lengths
from medtune.eval.llava_med import (
    LLAVA_MED_LABELS,
    LLAVA_MED_SCORER_VERSION,
    llava_med_hit,
    llava_med_recall,
)
from medtune.eval.normalize import answer_tokens

SCORER_VERSION = (
    "medtune-vqa-2: closed=whole-word containment, open=clipped token recall, "
    "unspaced scripts by character, strict=exact match"
)
ScorerVariant = Literal["medtune", "llava-med"]
SCORER_VARIANTS: tuple[ScorerVariant, ...] = ("medtune", "llava-med")
AnswerType = Literal["open", "closed"]
_TYPE_ALIASES: dict[str, AnswerType] = {
    "open": "open",
    "opened": "open",
    "closed": "closed",
    "close": "closed",
}
# Chinese negates by a prefixed character: "不是" (is not) must not earn "是" (yes), nor "没有" "有".
_NEGATIONS = frozenset("不没无未")


@dataclass(frozen=True)
class ItemScore:
    """One question's scores: `score`/`exact` are medtune's; `llava_med_*` are None where LLaVA-Med
    drops the question (its label is not exactly OPEN or CLOSED)."""

    answer_type: AnswerType
    score: float
    exact: float
    empty_prediction: bool
    llava_med_type: AnswerType | None = None
    llava_med_score: float | None = None
    llava_med_hit: float | None = None


def normalize_answer_type(answer_type: str, index: int) -> AnswerType:
    """Return "open" or "closed" for a dataset's answer-type label (case and spaces ignored)."""
    key = str(answer_type).strip().lower()
    if key not in _TYPE_ALIASES:
        raise ValueError(
            f"Unknown answer type {answer_type!r} at index {index}; expected 'open' or 'closed' "
            "(case and surrounding spaces are ignored). Fix the answer_type field of that record."
        )
    return _TYPE_ALIASES[key]


def _is_unspaced(token: str) -> bool:
    return len(token) == 1 and not token.isascii() and token.isalpha()


def _contains(haystack: list[str], needle: list[str]) -> bool:
    # Whole-token containment: "no" must not match inside "normal" or "nodule", which a raw
    # substring test (LLaVA-Med's) counts as correct; Chinese tokens are single characters.
    n = len(needle)
    for i in range(len(haystack) - n + 1):
        if haystack[i : i + n] != needle:
            continue
        negated = i > 0 and _is_unspaced(needle[0]) and haystack[i - 1] in _NEGATIONS
        if not negated:
            return True
    return False


def _token_recall(prediction: list[str], answer: list[str]) -> float:
    # Clipped: a word said three times is recalled once ("lung lung lung" vs "left lung" is 1/2).
    overlap = Counter(prediction) & Counter(answer)
    return sum(overlap.values()) / len(answer)


def _medtune_item(prediction: str, answer: str, answer_type: AnswerType) -> tuple[float, float, bool]:
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
    return score, exact, empty


def _checked(predictions: Any, answers: Any, answer_types: Any) -> tuple[list[str], list[str], list[str]]:
    columns = (
        as_text_list(predictions, "predictions", missing="empty"),
        as_text_list(answers, "answers", missing="error"),
        as_text_list(answer_types, "answer_types", missing="error"),
    )
    check_lengths(predictions=columns[0], answers=columns[1], answer_types=columns[2])
    return columns


def score_vqa_per_item(
    predictions: list[str], answers: list[str], answer_types: list[str]
) -> list[ItemScore]:
    """Return one ItemScore per question with both variants' scores (None/NaN predictions are empty)."""
    predictions, answers, answer_types = _checked(predictions, answers, answer_types)
    items = []
    for index, (prediction, answer, raw_type) in enumerate(zip(predictions, answers, answer_types)):
        answer_type = normalize_answer_type(raw_type, index)
        score, exact, empty = _medtune_item(prediction, answer, answer_type)
        llava_type = LLAVA_MED_LABELS.get(raw_type)
        llava_score = llava_hit = None
        if llava_type is not None:
            llava_hit = llava_med_hit(prediction, answer)
            llava_score = llava_hit if llava_type == "closed" else llava_med_recall(prediction, answer)
        items.append(ItemScore(answer_type, score, exact, empty, llava_type, llava_score, llava_hit))
    return items


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _medtune_scores(items: list[ItemScore]) -> dict[str, Any]:
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
    }


def _llava_med_scores(items: list[ItemScore]) -> dict[str, Any]:
    kept = [item for item in items if item.llava_med_type is not None]
    open_items = [item for item in kept if item.llava_med_type == "open"]
    closed_items = [item for item in kept if item.llava_med_type == "closed"]
    return {
        "open": _mean([item.llava_med_score for item in open_items]),  # its "recall" row
        "closed": _mean([item.llava_med_score for item in closed_items]),  # its "yes/no accuracy"
        # LLaVA-Med prints no global number: this is medtune's micro average of the two above.
        "global": _mean([item.llava_med_score for item in kept]),
        "open_hit": _mean([item.llava_med_hit for item in open_items]),  # its "open accuracy" row
        "n_open": len(open_items),
        "n_closed": len(closed_items),
        "n_dropped": len(items) - len(kept),
    }


def score_vqa(predictions: list[str], answers: list[str], answer_types: list[str]) -> dict:
    """Return open/closed/global accuracy as fractions in [0, 1] (None where a type has no questions)
    for both variants: the top-level keys are medtune's, and `variants` holds each variant by name."""
    items = score_vqa_per_item(predictions, answers, answer_types)
    medtune, llava = _medtune_scores(items), _llava_med_scores(items)
    dropped = llava["n_dropped"]
    if dropped:
        labels = sorted({repr(t) for t in as_text_list(answer_types, "answer_types", missing="error")})
        print(
            f"llava-med scorer: {dropped} question(s) left out, as LLaVA-Med leaves out labels other "
            f"than exactly 'OPEN'/'CLOSED' (labels seen: {', '.join(labels)}); the medtune variant counts them.",
            file=sys.stderr,
        )
    return {
        **medtune,
        "n_empty_predictions": sum(item.empty_prediction for item in items),
        "scorer_version": SCORER_VERSION,
        "scorer_variant": "medtune",  # the variant of the top-level open/closed/global keys
        "variants": {
            "medtune": {**medtune, "scorer_version": SCORER_VERSION},
            "llava-med": {**llava, "scorer_version": LLAVA_MED_SCORER_VERSION},
        },
    }
