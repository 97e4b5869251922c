"""Score a predictions table and write a run's `predictions.jsonl` + `scores.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtune.data.run_files import PREDICTIONS, SCORES, write_json_atomic
from medtune.eval.inputs import as_text_list, check_lengths
from medtune.eval.predictions import prediction_rows, write_predictions
from medtune.eval.text import count_tokens, score_text
from medtune.eval.vqa import SCORER_VARIANTS, score_vqa, score_vqa_per_item

# Answer types of report-generation records: scored with the text metrics only.
TEXT_ANSWER_TYPES = frozenset({"report", "text", ""})


def _is_text_type(answer_type: Any) -> bool:
    return str(answer_type or "").strip().lower() in TEXT_ANSWER_TYPES


def score_predictions(
    predictions: list[str],
    answers: list[str],
    answer_types: list[str],
    *,
    tokenizer: Any | None = None,
    bertscore_model: str | None = None,
    bertscore_num_layers: int | None = None,
) -> dict:
    """Return the merged score_vqa + score_text dict (VQA keys only when the answers are open/closed)."""
    predictions = as_text_list(predictions, "predictions", missing="empty")
    answers = as_text_list(answers, "answers", missing="error")
    answer_types = as_text_list(answer_types, "answer_types", missing="empty")
    check_lengths(predictions=predictions, answers=answers, answer_types=answer_types)
    scores: dict[str, Any] = {}
    if not all(_is_text_type(t) for t in answer_types):
        scores.update(score_vqa(predictions, answers, answer_types))
    scores.update(
        score_text(
            predictions,
            answers,
            bertscore_model=bertscore_model,
            tokenizer=tokenizer,
            bertscore_num_layers=bertscore_num_layers,
        )
    )
    return scores


def write_eval_outputs(
    out_dir: Path | str,
    *,
    qids: list[Any],
    questions: list[str],
    answers: list[str],
    answer_types: list[str],
    predictions: list[str],
    dataset: str,
    split: str,
    tokenizer: Any | None = None,
    bertscore_model: str | None = None,
    bertscore_num_layers: int | None = None,
) -> dict:
    """Return the scores after writing `predictions.jsonl` and `scores.json` (with dataset, split) to out_dir."""
    out_dir = Path(out_dir)
    predictions = as_text_list(predictions, "predictions", missing="empty")
    answers = as_text_list(answers, "answers", missing="error")
    answer_types = as_text_list(answer_types, "answer_types", missing="empty")
    questions = as_text_list(questions, "questions", missing="empty")
    if isinstance(qids, str):
        raise TypeError("qids must be a list with one id per question, not a single string.")
    qids = list(qids)
    check_lengths(qids=qids, questions=questions, predictions=predictions, answers=answers)
    scores = score_predictions(
        predictions,
        answers,
        answer_types,
        tokenizer=tokenizer,
        bertscore_model=bertscore_model,
        bertscore_num_layers=bertscore_num_layers,
    )
    items = None
    if "scorer_version" in scores:
        items = score_vqa_per_item(predictions, answers, answer_types)
    n_tokens = [count_tokens(p, tokenizer) for p in predictions]
    per_item = None if items is None else [item.score for item in items]
    rows = prediction_rows(qids, questions, answers, predictions, answer_types, n_tokens, per_item)
    for row, item in zip(rows, items or []):
        # `score` is medtune's; LLaVA-Med's is beside it (None where it leaves the question out).
        row["llava_med_score"] = item.llava_med_score
    write_predictions(out_dir / PREDICTIONS, rows)
    scores = {**scores, "dataset": dataset, "split": split}
    write_json_atomic(out_dir / SCORES, scores)
    return scores


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def vqa_summary(scores: dict, scorer: str = "medtune") -> str:
    """Return 'medtune: open 41.2% | closed 77.0% | global 62.5% (llava-med: open ...)', led by `scorer`."""
    if scorer not in SCORER_VARIANTS:
        raise ValueError(f"Unknown scorer {scorer!r}; choose one of {', '.join(SCORER_VARIANTS)}.")
    order = [scorer, *(v for v in SCORER_VARIANTS if v != scorer)]
    variants = scores.get("variants") or {}
    parts = [
        f"{variant}: "
        + " | ".join(f"{k} {_percent(variants[variant].get(k))}" for k in ("open", "closed", "global"))
        for variant in order
        if variant in variants  # scores written before both variants were reported have neither
    ]
    if not parts:
        return " | ".join(f"{k} {_percent(scores.get(k))}" for k in ("open", "closed", "global"))
    return parts[0] + "".join(f" ({part})" for part in parts[1:])


def format_scores(scores: dict, scorer: str = "medtune") -> str:
    """Return both VQA variants, `scorer` first ('medtune: open 41.2% | ... (llava-med: ...)'), or
    METEOR and ROUGE-L F1 for reports."""
    if "global" in scores:
        return vqa_summary(scores, scorer)
    return f"METEOR {100 * scores['meteor']:.2f}% | ROUGE-L F1 {100 * scores['rougeL_f1']:.2f}%"
