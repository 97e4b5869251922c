"""Evaluate a model on VQA or report records: generate, score, write predictions.jsonl and scores.json."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from medtune.core_models import Built
from medtune.data import ReportRecord, VQARecord
from medtune.data.tasks import answer_fields
from medtune.eval import generate_answers, score_predictions, write_eval_outputs
from medtune.tuning.batches import make_collator
from medtune.tuning.errors import UsageError
from medtune.tuning.loss import model_loss
from medtune.tuning.run_dir import check_free_space


def predict(
    built: Built,
    records: list,
    *,
    batch_size: int = 32,
    max_new_tokens: int = 8,
    temperature: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> list[str]:
    """Return the model's generated answer for each record (greedy unless ``temperature`` > 0)."""
    loader = DataLoader(
        records, batch_size=batch_size, shuffle=False, collate_fn=make_collator(built, train=False)
    )
    model = built.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batches = ({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in loader)
    with torch.no_grad():
        predictions = generate_answers(
            model,
            batches,
            built.tokenizer,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            progress=progress,
            family=built.family,
        )
    model.train(was_training)
    return predictions


def evaluate(
    built: Built,
    records: list[VQARecord | ReportRecord],
    *,
    out_dir: Path | None = None,
    dataset: str = "",
    split: str = "test",
    bertscore_model: str | None = None,
    **generation,
) -> dict:
    """Return the scores of ``built`` on ``records``; with ``out_dir``, also write predictions and scores there."""
    if out_dir is not None:  # before generating, so a full disk does not waste the whole generation
        check_free_space(Path(out_dir), predictions_bytes(records, generation), "predictions")
    predictions = predict(built, records, **generation)
    fields = answer_fields(records)
    if out_dir is None:
        return score_predictions(
            predictions,
            fields["answers"],
            fields["answer_types"],
            tokenizer=built.tokenizer,
            bertscore_model=bertscore_model,
        )
    try:
        return write_eval_outputs(
            out_dir,
            predictions=predictions,
            dataset=dataset,
            split=split,
            tokenizer=built.tokenizer,
            bertscore_model=bertscore_model,
            **fields,
        )
    except OSError as err:  # the disk filled during the write, or the folder is read-only
        raise UsageError(
            f"cannot write the predictions and scores in {out_dir} ({err.strerror or err}); free some space "
            "there or pass a folder you can write to, then score the run again with `medtune eval` "
            "(no half-written file was left)"
        ) from None


def predictions_bytes(records: list, generation: dict) -> int:
    """Return a generous estimate of predictions.jsonl + scores.json for ``records`` (bytes)."""
    per_row = 300 + 16 * int(generation.get("max_new_tokens") or 128)  # JSON keys, escapes, UTF-8
    texts = sum(
        len(getattr(r, "question", "")) + len(getattr(r, "answer", getattr(r, "report", ""))) for r in records
    )
    return 2 * texts + per_row * len(records)


def validation_loss(built: Built, records: list, *, batch_size: int = 32) -> float:
    """Return the mean teacher-forced loss of ``built.model`` over ``records`` (weighted by batch size)."""
    loader = DataLoader(
        records, batch_size=batch_size, shuffle=False, collate_fn=make_collator(built, train=True)
    )
    model = built.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            batch.pop("qids", None)
            n = len(batch["input_ids"])
            total += model_loss(model, {k: v.to(device) for k, v in batch.items()}).item() * n
            count += n
    model.train(was_training)
    return total / max(count, 1)
