"""Read run directories (config.json, metrics.jsonl, scores.json, eval-*/scores.json) into table rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.data.run_files import CONFIG, EVAL_PREFIX, METRICS, SCORES, eval_dir_parts

# How the paper's tables spell a group and a method (Tables 1-5); any other name is shown as it is. The groups
# themselves come from each run's config.json, which names them in the family's order.
GROUP_DISPLAY = {
    "vision_tower": "Vision Tower",
    "connector": "Connector",
    "llm": "LLM",
    "lm_head": "LM head",
    "vit": "ViT",
    "jtm": "JTM",
    "dec": "DEC",
}
METHOD_DISPLAY = {
    "ln": "LayerNorm",
    "attention": "Attention",
    "ffn": "FFN",
    "lora": "LoRA",
    "prefix": "Prefix",
    "full": "T",
}


@dataclass
class RunRow:
    """One table row: a run's scores on one dataset split, with the run's config."""

    run_dir: Path
    label: str
    family: str
    preset: str
    method: str
    groups: list[str]
    paradigm: list[str]
    dataset: str
    split: str
    scores: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    metrics_path: Path | None = None
    lr: float | None = None

    def group_states(self) -> list[str]:
        """Return each group's state as the paper prints it (T, F, or the method's display name)."""
        method = METHOD_DISPLAY.get(self.method, self.method)
        return [method if state.upper() == "PEFT" else state.upper() for state in self.paradigm]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}).") from None


def _dataset_label(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("name") or value.get("source")
    if not value:
        return None
    text = str(value).rstrip("/")
    return Path(text).name if "/" in text else text


def _split_label(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("split")
    return None if value is None else str(value)


def _paradigm(config: dict, groups: list[str], config_path: Path) -> list[str]:
    paradigm = config.get("paradigm", "")
    states = paradigm.split(",") if isinstance(paradigm, str) else [str(s) for s in paradigm]
    states = [s.strip() for s in states if s.strip()]
    if len(states) != len(groups):
        raise ValueError(
            f"{config_path} field 'paradigm' is {paradigm!r} with {len(states)} states, but the run has "
            f"{len(groups)} module groups ({', '.join(groups)}); write one state (T, F or PEFT) per group."
        )
    return states


def _rows_of_run(run_dir: Path, problems: list[str]) -> list[RunRow]:
    config_path = run_dir / CONFIG
    if not config_path.is_file():
        problems.append(
            f"{run_dir} has no config.json, so it is not a medtune run directory; it is left out of the report."
        )
        return []
    config = _read_json(config_path)
    family = str(config.get("family", ""))
    groups = [str(g) for g in config.get("groups") or ()]
    if not groups:
        raise ValueError(
            f"{config_path} has no 'groups' list (medtune train writes the model's module groups there); "
            "it is not a medtune run's config, or was edited by hand."
        )
    base = {
        "run_dir": run_dir,
        "family": family,
        "preset": str(config.get("preset", "unknown")),
        "method": str(config.get("method", "unknown")),
        "groups": groups,
        "paradigm": _paradigm(config, groups, config_path),
        "params": dict(config.get("params") or {}),
        "metrics_path": run_dir / METRICS if (run_dir / METRICS).is_file() else None,
        "lr": config["lr"] if isinstance(config.get("lr"), int | float) else None,
    }
    dataset = config.get("dataset")
    rows = []
    scores_path = run_dir / SCORES
    if scores_path.is_file():
        scores = _read_json(scores_path)
        rows.append(
            RunRow(
                label=run_dir.name,
                dataset=_dataset_label(scores.get("dataset")) or _dataset_label(dataset) or "unknown",
                split=_split_label(scores.get("split")) or _split_label(dataset) or "unknown",
                scores=scores,
                **base,
            )
        )
    else:
        problems.append(
            f"Run directory {run_dir} has no scores.json (no predictions were scored: training unfinished "
            f"or evaluation not run); its own dataset is left out of the tables. Score it with "
            f"`medtune eval {run_dir} --dataset SOURCE`."
        )
    for eval_scores in sorted(run_dir.glob(f"{EVAL_PREFIX}*/{SCORES}")):
        scores = _read_json(eval_scores)
        folder_dataset, folder_split = eval_dir_parts(eval_scores.parent.name)
        rows.append(
            RunRow(
                label=f"{run_dir.name}/{eval_scores.parent.name}",
                dataset=_dataset_label(scores.get("dataset")) or folder_dataset,
                split=_split_label(scores.get("split")) or folder_split or "unknown",
                scores=scores,
                **base,
            )
        )
    return rows


def load_runs(run_dirs: list[Path]) -> tuple[list[RunRow], list[str]]:
    """Return the table rows of all run directories and a sentence for each directory left out."""
    rows: list[RunRow] = []
    problems: list[str] = []
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            problems.append(f"{run_dir} is not a directory; pass run directories such as runs/<run>.")
            continue
        rows.extend(_rows_of_run(run_dir, problems))
    return rows, problems
