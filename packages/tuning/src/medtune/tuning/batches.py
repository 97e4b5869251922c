"""Collators for a built model: the preset's prompt template, its image processor and image tokens."""

from __future__ import annotations

from medtune.core_models import Built
from medtune.data import BlipVQACollator, LlavaCollator, get_template


def make_collator(built: Built, *, train: bool, max_length: int = 512):
    """Return the collator that turns records into model inputs for ``built``'s family."""
    if built.family == "miss":
        return BlipVQACollator(built.tokenizer, built.image_processor, train=train)
    if built.family == "vlm":  # the checkpoint's own chat template and processor
        from medtune.data.chat_collator import ChatTemplateCollator

        return ChatTemplateCollator(built.processor, train=train)
    return LlavaCollator(
        built.tokenizer,
        built.image_processor,
        get_template(built.preset.template),
        num_image_tokens=built.num_image_tokens,
        # The checkpoint's own image token (LLaVA-Med v1 calls it <im_patch>, llava-hf <image>).
        image_token=built.tokenizer.convert_ids_to_tokens(built.model.config.image_token_index),
        image_wrap=built.image_wrap,
        max_length=max_length,
        padding_side="right" if train else "left",
        train=train,
    )
