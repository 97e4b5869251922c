"""Serve a merged export with transformers alone: what a user without medtune (or a serving engine) runs.

Usage: python serve_export.py EXPORT DTYPE JOBS.json OUT.json, JOBS.json listing {"image", "question"}; DTYPE the
precision to load in ("auto": the checkpoint's). Writes, per job, the prompt's token ids and the generated answer.
Run in a fresh interpreter by the tests (no medtune import).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, BlipForQuestionAnswering, BlipProcessor


def main(export: str, dtype: str, jobs_file: str, out_file: str) -> None:
    blip = "Blip" in json.loads(Path(export, "config.json").read_text())["architectures"][0]
    cls = BlipForQuestionAnswering if blip else AutoModelForImageTextToText
    model = cls.from_pretrained(export, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    processor = (BlipProcessor if blip else AutoProcessor).from_pretrained(export)
    results = []
    for job in json.loads(Path(jobs_file).read_text()):
        image = Image.open(job["image"]).convert("RGB")
        if blip:
            inputs = processor(images=image, text=job["question"], return_tensors="pt")
        else:
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": job["question"]}]}
            ]
            prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = processor(images=image, text=prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs)  # generation_config.json: greedy, the task's answer length
        new = out if blip else out[:, inputs["input_ids"].shape[1] :]
        results.append({
            "prompt_ids": inputs["input_ids"][0].tolist(),
            "answer": processor.batch_decode(new, skip_special_tokens=True)[0].strip(),
            "processor": type(processor).__name__,
            "dtype": str(model.dtype),
        })  # fmt: skip
    leaked = sorted(m for m in sys.modules if m == "medtune" or m.startswith("medtune."))
    assert not leaked, f"medtune was imported: {leaked}"
    Path(out_file).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:5])
