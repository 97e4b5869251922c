"""Collators for a built model: the preset's prompt template, its image processor and image tokens."""

from __future__ import annotations

from medtune.core_models import IMAGE_TOKEN, Built
from medtune.data import BlipVQACollator, LlavaCollator, get_template


def make_collator(built: Built, *, train: bool, max_length: int = 512):
    """Return the collator that turns records into model inputs for ``built``'s family."""
    if built.family == "miss":
        return BlipVQACollator(built.tokenizer, built.image_processor, train=train)
    return LlavaCollator(
        built.tokenizer,
        built.image_processor,
        get_template(built.preset.template),
        num_image_tokens=built.num_image_tokens,
        image_token=IMAGE_TOKEN,
        max_length=max_length,
        padding_side="right" if train else "left",
        train=train,
    )
