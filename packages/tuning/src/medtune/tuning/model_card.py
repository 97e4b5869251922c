"""The model card (README.md) of a merged export: what it was tuned from, how, on what, and how it scored."""

from __future__ import annotations

import json
from pathlib import Path

from medtune.core_models import Built
from medtune.data import run_files
from medtune.tuning.adapter import medtune_version

SCORES = ("global", "open", "closed", "bertscore_f1", "meteor", "rougeL_f1")


def scores_line(scores: dict) -> str:
    """Return the headline scores of a scores.json as one line (percentages for accuracies)."""
    variant = scores.get("variants", {}).get(scores.get("scorer", ""), scores)
    shown = []
    for key in SCORES:
        value = variant.get(key, scores.get(key))
        if isinstance(value, int | float):
            shown.append(
                f"{key} {100 * value:.1f}%" if key in ("global", "open", "closed") else f"{key} {value:.3f}"
            )
    return ", ".join(shown) or "none recorded"


def model_card(built: Built, manifest: dict, run_config: dict, adapter: Path) -> str:
    """Return the README.md text for a merged checkpoint of ``adapter``."""
    dataset = run_config.get("dataset") or {}
    params = run_config.get("params") or {}
    scores_file = adapter.parent / run_files.SCORES
    scores = json.loads(scores_file.read_text()) if scores_file.is_file() else {}
    family = built.family
    load = (
        "model = BlipForQuestionAnswering.from_pretrained(path)\nprocessor = BlipProcessor.from_pretrained(path)\n"
        "inputs = processor(images=image, text=question, return_tensors='pt')"
        if family == "miss"
        else "model = AutoModelForImageTextToText.from_pretrained(path)\nprocessor = AutoProcessor.from_pretrained(path)\n"
        "messages = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': question}]}]\n"
        "prompt = processor.apply_chat_template(messages, add_generation_prompt=True)\n"
        "inputs = processor(images=image, text=prompt, return_tensors='pt')"
    )
    counts = (
        f"{params.get('total', 0):,} total, {params.get('trainable', 0):,} trained, "
        f"{params.get('peft', 0):,} by the method"
    )
    rows = [
        ("base", f"{manifest['preset']} ({manifest.get('base_source', 'bundled')})"),
        (
            "method",
            f"{manifest['method']} {json.dumps(manifest.get('method_config', manifest.get('method_details', {})))}",
        ),
        ("paradigm", f"{manifest['paradigm']} over groups {', '.join(run_config.get('groups', []))}"),
        ("dataset", f"{dataset.get('name', 'unknown')} ({dataset.get('task', 'vqa')})"),
        ("scores (test)", scores_line(scores)),
        ("parameters", counts),
        (
            "tuned on 4-bit weights",
            "yes (merged into the full-precision base)" if manifest.get("trained_4bit") else "no",
        ),
        ("precision", str(next(built.model.parameters()).dtype).removeprefix("torch.")),
        ("medtune", medtune_version()),
    ]
    new_tokens = (
        "" if family == "miss" else '[:, inputs["input_ids"].shape[1] :]'
    )  # generate() repeats the prompt
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        f"# {manifest['preset']} tuned with {manifest['method']} (medtune)\n\n"
        f"A merged checkpoint: the adapter in `{adapter}` folded into its base, saved in the base's precision.\n\n"
        f"| | |\n|---|---|\n{table}\n\n"
        "## Use\n\n"
        f"```python\n{load}\nout = model.generate(**inputs){new_tokens}\n"
        "answer = processor.batch_decode(out, skip_special_tokens=True)[0]\n```\n\n"
        "generation_config.json holds medtune's evaluation settings (greedy, the task's answer length)"
        + ("" if family == "miss" else "; the chat template renders the prompt the model was tuned with")
        + ".\n"
    )
