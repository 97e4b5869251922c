"""Report-generation instructions: the paper's fixed inference prompt and XrayGPT-style training paraphrases."""

from __future__ import annotations

import random

# The paper uses this one sentence for every report-generation inference.
REPORT_INFERENCE_INSTRUCTION = "Describe the given chest x-ray image in detail."

# Training draws one paraphrase per sample (XrayGPT's style); written for medtune, not copied.
REPORT_TRAINING_INSTRUCTIONS: tuple[str, ...] = (
    "Describe the given chest x-ray image in detail.",
    "Write the radiology report for this chest radiograph.",
    "What are the findings and the impression for this chest x-ray?",
    "Give a detailed description of what this chest x-ray shows.",
    "Summarise the findings of this chest radiograph as a radiologist would.",
    "Report on the heart, lungs, pleura and bones visible in this chest x-ray.",
    "Examine this chest x-ray and write the findings and impression.",
    "Provide a radiology report describing this chest image.",
)


def report_instruction(rng: random.Random) -> str:
    """Return one training instruction drawn with rng (seed it for reproducible runs)."""
    return rng.choice(REPORT_TRAINING_INSTRUCTIONS)
