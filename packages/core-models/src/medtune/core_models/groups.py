"""Named module groups: which parameter belongs to the vision tower, connector, LLM, LM head, ..."""

from __future__ import annotations

from medtune.core_models.presets import FAMILY_GROUPS

# The vlm family: one rule per supported transformers image-text-to-text class, read off the class's own module
# names (transformers 5.x). As for llava, the "LM head" group is the output head plus the input embeddings (the two
# are one tensor where the checkpoint ties them). Qwen-VL's merger sits inside its vision module but is the
# connector: the longest matching prefix wins (see group_of).
VLM_GROUP_PREFIXES: dict[str, dict[str, tuple[str, ...]]] = {
    "Gemma3ForConditionalGeneration": {
        "vision_tower": ("model.vision_tower.",),
        "connector": ("model.multi_modal_projector.",),
        "llm": ("model.language_model.",),
        "lm_head": ("lm_head.", "model.language_model.embed_tokens."),
    },
    "Qwen2_5_VLForConditionalGeneration": {
        "vision_tower": ("model.visual.",),
        "connector": ("model.visual.merger.",),
        "llm": ("model.language_model.",),
        "lm_head": ("lm_head.", "model.language_model.embed_tokens."),
    },
    "Qwen2VLForConditionalGeneration": {
        "vision_tower": ("model.visual.",),
        "connector": ("model.visual.merger.",),
        "llm": ("model.language_model.",),
        "lm_head": ("lm_head.", "model.language_model.embed_tokens."),
    },
    "Idefics3ForConditionalGeneration": {
        "vision_tower": ("model.vision_model.",),
        "connector": ("model.connector.",),
        "llm": ("model.text_model.",),
        "lm_head": ("lm_head.", "model.text_model.embed_tokens."),
    },
    "LlavaNextForConditionalGeneration": {
        "vision_tower": ("model.vision_tower.",),
        # the learned separator LLaVA-NeXT puts after each row of image features belongs with the projector
        "connector": ("model.multi_modal_projector.", "model.image_newline."),
        "llm": ("model.language_model.",),
        "lm_head": ("lm_head.", "model.language_model.embed_tokens."),
    },
    "InternVLForConditionalGeneration": {
        "vision_tower": ("model.vision_tower.",),
        "connector": ("model.multi_modal_projector.",),
        "llm": ("model.language_model.",),
        "lm_head": ("lm_head.", "model.language_model.embed_tokens."),
    },
}


def _union(rules: dict[str, dict[str, tuple[str, ...]]]) -> dict[str, tuple[str, ...]]:
    merged: dict[str, tuple[str, ...]] = {}
    for rule in rules.values():
        for group, prefixes in rule.items():
            merged[group] = tuple(dict.fromkeys((*merged.get(group, ()), *prefixes)))
    return merged


# Parameter-name prefixes of each group, as transformers names them. LLaVA's "LM head" is the input
# embeddings plus the output head: LLaVA trains both when it says "LM head" (DESIGN.md). The vlm family's
# table is the union of its architectures' rules, which never disagree on a name (packages/core-models/tests/test_vlm.py).
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
    "vlm": _union(VLM_GROUP_PREFIXES),
}


def group_of(name: str, family: str, prefixes: dict[str, tuple[str, ...]] | None = None) -> str:
    """Return the group a parameter or module name belongs to (the longest matching prefix wins).

    ``prefixes`` overrides the family's table (one architecture's rule from VLM_GROUP_PREFIXES, say).
    """
    # Strip wrappers' prefixes (PEFT's base_model.model., FSDP/compile's _orig_mod., DDP's module.).
    for wrapper in ("base_model.model.", "_orig_mod.", "module."):
        while name.startswith(wrapper):
            name = name[len(wrapper) :]
    best, best_len = None, -1
    for group, group_prefixes in (prefixes or GROUP_PREFIXES[family]).items():
        for p in group_prefixes:
            if (name.startswith(p) or name + "." == p) and len(p) > best_len:
                best, best_len = group, len(p)
    if best is None:
        raise ValueError(
            f"parameter {name!r} belongs to no {family} group ({', '.join(FAMILY_GROUPS[family])}); "
            "is this model of that family?"
        )
    return best
