"""BERTScore with a local encoder only: a directory, or a model name already in the local HF cache."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from medtune.eval.inputs import as_text_list, check_lengths

# bert-score's own default for English text.
DEFAULT_BERTSCORE_MODEL = "roberta-large"


def package_version(name: str) -> str:
    """Return the installed version of distribution `name`, or "unknown" when it has no metadata."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class BertScoreResult:
    """Mean precision/recall/F1, or `skipped_reason` (and None scores) when no local encoder exists."""

    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    model: str | None = None
    num_layers: int | None = None
    skipped_reason: str | None = None

    @property
    def implementation(self) -> str | None:
        """A label naming the library, encoder and layer behind the numbers (None when skipped)."""
        if self.model is None:
            return None
        return (
            f"bert-score {package_version('bert-score')}, encoder {self.model} layer {self.num_layers}, "
            "no idf weighting, no baseline rescaling"
        )


def resolve_local_encoder(model: str | None) -> tuple[Path | None, str]:
    """Return (local directory, name) for `model` (default roberta-large), or (None, reason) when absent."""
    name = model or DEFAULT_BERTSCORE_MODEL
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            return (
                None,
                f"the BERTScore model directory {path} has no config.json; pass a Hugging Face model folder",
            )
        return path, name
    if model is not None and (path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1):
        return None, f"the BERTScore model path {path} does not exist; pass a local model folder"
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        # local_files_only: a name is only used when it is already in the local cache, never downloaded.
        return Path(snapshot_download(name, local_files_only=True)), name
    except (LocalEntryNotFoundError, OSError, ValueError):
        how = "pass --bertscore-model PATH_OR_NAME with a local encoder (roberta-large as in bert-score)"
        return (
            None,
            f"no local copy of the BERTScore encoder {name!r} was found (nothing is downloaded); {how}",
        )


def _default_num_layers(name: str, directory: Path) -> int:
    from bert_score.utils import model2layers

    # bert-score's tuned layer for known encoders (e.g. roberta-large -> 17); otherwise the last layer.
    for key in (name, directory.name):
        if key in model2layers:
            return model2layers[key]
    config = json.loads((directory / "config.json").read_text())
    return int(config.get("num_hidden_layers", config.get("n_layers", 1)))


def bertscore(
    predictions: list[str], references: list[str], *, model: str | None = None, num_layers: int | None = None
) -> BertScoreResult:
    """Return the mean BERTScore of the pairs with a local encoder, or a result naming why it was skipped."""
    predictions = as_text_list(predictions, "predictions", missing="empty")
    references = as_text_list(references, "references", missing="error")
    check_lengths(predictions=predictions, references=references)
    directory, name = resolve_local_encoder(model)
    if directory is None:
        return BertScoreResult(skipped_reason=name)
    import bert_score

    layers = num_layers if num_layers is not None else _default_num_layers(name, directory)
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: the encoder is a local folder already
    # bert-score scores a pair with an empty side as 0; its own empty-string path fails under
    # transformers 5, so those pairs get their 0 here and only the others reach the encoder.
    scored = [i for i, (p, r) in enumerate(zip(predictions, references)) if p.strip() and r.strip()]
    totals = [0.0, 0.0, 0.0]
    try:
        if scored:
            scorer = bert_score.BERTScorer(model_type=str(directory), num_layers=layers, batch_size=32)
            outputs = scorer.score(
                [predictions[i] for i in scored], [references[i] for i in scored], verbose=False
            )
            totals = [float(values.sum()) for values in outputs]
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous
    n = len(predictions)
    return BertScoreResult(
        precision=totals[0] / n,
        recall=totals[1] / n,
        f1=totals[2] / n,
        model=name,
        num_layers=layers,
    )
