"""Report-style text metrics: BERTScore, METEOR, ROUGE-L and mean output length."""

from __future__ import annotations

import re
import sys
from typing import Any

from medtune.eval.bertscore import bertscore, package_version
from medtune.eval.inputs import as_text_list, check_lengths

_WORD = re.compile(r"\w+|[^\w\s]")


def _meteor_tokens(text: str) -> list[str]:
    # A regex split stands in for nltk.word_tokenize, which needs the punkt corpus we cannot download.
    return _WORD.findall(text.lower())


class _NoSynonyms:
    """WordNet stand-in with no synsets: METEOR then matches exact words and Porter stems only."""

    def synsets(self, word: str) -> list:
        return []


def _wordnet_or_none() -> Any | None:
    from nltk.corpus import wordnet

    try:
        wordnet.synsets("dog")
    except LookupError:
        return None
    return wordnet


def _pairs(predictions: Any, references: Any) -> tuple[list[str], list[str]]:
    predictions = as_text_list(predictions, "predictions", missing="empty")
    references = as_text_list(references, "references", missing="error")
    check_lengths(predictions=predictions, references=references)
    return predictions, references


def meteor_implementation(variant: str) -> str:
    """Return a label naming the METEOR implementation and matcher behind `meteor`."""
    return (
        f"nltk {package_version('nltk')} meteor_score (alpha 0.9, beta 3, gamma 0.5), "
        f"regex word split, matching {variant}"
    )


def rouge_l_implementation() -> str:
    """Return a label naming the ROUGE-L implementation behind `rouge_l`."""
    return f"rouge-score {package_version('rouge-score')} rougeL, no stemming, its default tokenizer"


def meteor(predictions: list[str], references: list[str]) -> tuple[float, str]:
    """Return the mean NLTK METEOR over pairs and which matcher it used ("exact+stem+wordnet" or "exact+stem")."""
    from nltk.translate.meteor_score import meteor_score

    predictions, references = _pairs(predictions, references)
    wordnet = _wordnet_or_none()
    variant = "exact+stem+wordnet" if wordnet is not None else "exact+stem"
    matcher = wordnet if wordnet is not None else _NoSynonyms()
    scores = [
        meteor_score([_meteor_tokens(ref)], _meteor_tokens(pred), wordnet=matcher)
        for pred, ref in zip(predictions, references)
    ]
    return sum(scores) / len(scores), variant


def rouge_l(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Return ROUGE-L recall, precision and F1 (rouge-score, no stemming) averaged over pairs."""
    from rouge_score import rouge_scorer

    predictions, references = _pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    totals = {"rougeL_recall": 0.0, "rougeL_precision": 0.0, "rougeL_f1": 0.0}
    for pred, ref in zip(predictions, references):
        score = scorer.score(ref, pred)["rougeL"]
        totals["rougeL_recall"] += score.recall
        totals["rougeL_precision"] += score.precision
        totals["rougeL_f1"] += score.fmeasure
    return {key: value / len(predictions) for key, value in totals.items()}


def count_tokens(text: str, tokenizer: Any | None = None) -> int:
    """Return the number of tokens of `text` (tokenizer ids without special tokens, else whitespace words)."""
    if not isinstance(text, str):
        raise TypeError(f"count_tokens takes one text (a str), not a {type(text).__name__}.")
    if tokenizer is None:
        return len(text.split())
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenizer_unit(tokenizer: Any | None) -> str:
    """Return a label naming what `count_tokens` counts with this tokenizer."""
    if tokenizer is None:
        return "whitespace"
    return f"tokenizer:{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}"


def mean_tokens(predictions: list[str], tokenizer: Any | None = None) -> float:
    """Return the mean token count of the predictions."""
    predictions = as_text_list(predictions, "predictions", missing="empty")
    check_lengths(predictions=predictions)
    return sum(count_tokens(p, tokenizer) for p in predictions) / len(predictions)


def score_text(
    predictions: list[str],
    references: list[str],
    *,
    bertscore_model: str | None = None,
    tokenizer: Any | None = None,
    bertscore_num_layers: int | None = None,
) -> dict:
    """Return BERTScore P/R/F1 (or `bertscore_skipped` with the reason), METEOR, ROUGE-L R/P/F1 and
    mean tokens, each averaged over prediction/reference pairs and as fractions in [0, 1]."""
    predictions, references = _pairs(predictions, references)
    result: dict[str, Any] = {}
    bert = bertscore(predictions, references, model=bertscore_model, num_layers=bertscore_num_layers)
    if bert.skipped_reason is not None:
        print(f"BERTScore skipped: {bert.skipped_reason}", file=sys.stderr)
        result["bertscore_skipped"] = bert.skipped_reason
    else:
        result.update(
            bertscore_precision=bert.precision,
            bertscore_recall=bert.recall,
            bertscore_f1=bert.f1,
            bertscore_model=bert.model,
            bertscore_num_layers=bert.num_layers,
            bertscore_implementation=bert.implementation,
        )
    result["meteor"], result["meteor_variant"] = meteor(predictions, references)
    result["meteor_implementation"] = meteor_implementation(result["meteor_variant"])
    result.update(rouge_l(predictions, references))
    result["rougeL_implementation"] = rouge_l_implementation()
    result["mean_tokens"] = mean_tokens(predictions, tokenizer)
    result["mean_tokens_unit"] = tokenizer_unit(tokenizer)
    result["n_text"] = len(predictions)
    result["n_empty_predictions_text"] = sum(not p.strip() for p in predictions)
    return result
