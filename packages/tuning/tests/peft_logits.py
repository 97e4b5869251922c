"""Load medtune adapters with transformers + PEFT alone and save their outputs: what a user without medtune runs.

Usage: python peft_logits.py JOBS.json, where JOBS.json lists {"base", "adapter", "inputs", "out"}: the base
checkpoint folder, the adapter folder, a torch file of model inputs and where to write the outputs. Run in a fresh
interpreter by the tests, so nothing of medtune is imported (checked at the end).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from peft import PeftModel

FIELDS = (
    "logits",
    "loss",
    "image_embeds",
)  # BLIP's VQA output has no logits: its loss depends on every group


def outputs(base: str, adapter: str, inputs: dict) -> dict[str, torch.Tensor]:
    """Return the adapted model's outputs on ``inputs`` (the FIELDS it has), the base loaded in fp32."""
    architecture = json.loads(Path(base, "config.json").read_text())["architectures"][0]
    model = getattr(transformers, architecture).from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).eval()
    with torch.no_grad():
        out = model(**inputs)
    return {f: getattr(out, f) for f in FIELDS if getattr(out, f, None) is not None}


def main(jobs_file: str) -> None:
    for job in json.loads(Path(jobs_file).read_text()):
        inputs = torch.load(job["inputs"])
        torch.save(outputs(job["base"], job["adapter"], inputs), job["out"])
    leaked = sorted(m for m in sys.modules if m == "medtune" or m.startswith("medtune."))
    assert not leaked, f"medtune was imported: {leaked}"


if __name__ == "__main__":
    main(sys.argv[1])
