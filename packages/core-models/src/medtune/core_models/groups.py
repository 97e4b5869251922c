"""Named module groups: which parameter belongs to the vision tower, connector, LLM, LM head, ..."""

from __future__ import annotations

from medtune.core_models.presets import FAMILY_GROUPS

# Parameter-name prefixes of each group, as transformers names them. LLaVA's "LM head" is the input
# embeddings plus the output head: LLaVA trains both when it says "LM head" (DESIGN.md).
GROUP_PREFIXES: dict[str, dict[str, tuple[str, ...]]] = {
    "llava": {
        "vision_tower": ("model.vision_tower.",),
        "connector": ("model.multi_modal_projector.",),
        "lm_head": ("lm_head.", "model.language_model.embed_tokens."),
        "llm": ("model.language_model.",),
    },
    "miss": {
        "vit": ("vision_model.",),
        "jtm": ("text_encoder.",),
        "dec": ("text_decoder.",),
    },
}


def group_of(name: str, family: str) -> str:
    """Return the group a parameter or module name belongs to (first matching prefix wins)."""
    # Strip wrappers' prefixes (PEFT's base_model.model., FSDP/compile's _orig_mod., DDP's module.).
    for wrapper in ("base_model.model.", "_orig_mod.", "module."):
        while name.startswith(wrapper):
            name = name[len(wrapper) :]
    for group, prefixes in GROUP_PREFIXES[family].items():
        if any(name.startswith(p) or name + "." == p for p in prefixes):
            return group
    raise ValueError(
        f"parameter {name!r} belongs to no {family} group ({', '.join(FAMILY_GROUPS[family])}); "
        "is this model of that family?"
    )
