"""The `vlm` family: any supported transformers image-text-to-text checkpoint, with one rule per architecture.

A rule names the transformers class, where its language model sits (prefix tuning, FSDP units) and the shapes
the memory planner needs; its module groups are in groups.VLM_GROUP_PREFIXES. Prompts and images go through the
checkpoint's own processor and chat template (medtune.data.chat_collator), never a medtune template.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import PretrainedConfig, PreTrainedModel

from medtune.core_models.errors import CheckpointError, read_json
from medtune.core_models.groups import VLM_GROUP_PREFIXES, group_of
from medtune.core_models.presets import Preset, get_preset

# The planner's image for architectures of dynamic resolution: a 448 x 448 scan (Qwen2.5-VL: 32 x 32 patches of
# 14 px, 256 LLM tokens after the 2 x 2 merge). Idefics3's processor splits an image into tiles of its encoder's
# size: its default (longest edge 4 tiles) makes a square scan 4 x 4 tiles plus one global view.
PLANNING_IMAGE_SIDE = 448
IDEFICS3_PLANNING_TILES = 17


@dataclass(frozen=True)
class Tower:
    """The shape of one transformer stack for the memory planner: layers, widths, heads, tokens per sample."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_dim: int
    tokens: int


@dataclass(frozen=True)
class VlmRule:
    """How medtune handles one transformers image-text-to-text class."""

    architecture: str  # the class name a checkpoint's config.json lists under "architectures"
    text_stack: str  # attribute path of the language model (the decoder stack prefix tuning and FSDP use)
    vision: Callable[[PretrainedConfig], Tower]  # the vision tower's shape (tokens: patches per image)
    image_tokens: Callable[
        [PretrainedConfig], int
    ]  # LLM positions one image takes at the planning resolution
    default_preset: str  # the real-shape preset `medtune params vlm` counts for this architecture
    prefix_refusal: str = ""  # why prefix tuning cannot be applied to this architecture, if it cannot

    @property
    def model_class(self) -> type[PreTrainedModel]:
        return getattr(transformers, self.architecture)

    def group_of(self, name: str) -> str:
        """Return the group of a parameter or module name under this architecture's own rule."""
        return group_of(name, "vlm", VLM_GROUP_PREFIXES[self.architecture])


def _square_patches(vision: PretrainedConfig) -> int:
    size, patch = vision.image_size, vision.patch_size
    size = size[0] if isinstance(size, list | tuple) else size
    patch = patch[0] if isinstance(patch, list | tuple) else patch
    return (size // patch) ** 2


def _vit(vision: PretrainedConfig, tokens: int) -> Tower:
    return Tower(
        vision.num_hidden_layers,
        vision.hidden_size,
        vision.intermediate_size,
        vision.num_attention_heads,
        vision.hidden_size,
        tokens,
    )


def _qwen_vision(config: PretrainedConfig) -> Tower:
    v = config.vision_config
    patches = (PLANNING_IMAGE_SIDE // v.patch_size) ** 2
    return Tower(v.depth, v.hidden_size, v.intermediate_size, v.num_heads, v.hidden_size, patches)


def _qwen2_vision(config: PretrainedConfig) -> Tower:
    v = config.vision_config  # Qwen2-VL names the ViT's width embed_dim (its hidden_size is the LLM's)
    patches = (PLANNING_IMAGE_SIDE // v.patch_size) ** 2
    return Tower(v.depth, v.embed_dim, v.embed_dim * v.mlp_ratio, v.num_heads, v.embed_dim, patches)


def _qwen_tokens(config: PretrainedConfig) -> int:
    v = config.vision_config
    return (PLANNING_IMAGE_SIDE // v.patch_size) ** 2 // v.spatial_merge_size**2 + 2  # + vision start/end


def _idefics3_tokens(config: PretrainedConfig) -> int:
    per_tile = _square_patches(config.vision_config) // config.scale_factor**2
    return IDEFICS3_PLANNING_TILES * (per_tile + 2)  # each tile is wrapped in <fake_token_around_image> + tag


def _anyres_side(config: PretrainedConfig) -> int:
    """Return the side of the largest square resolution LLaVA-NeXT's any-resolution grid offers (a square scan)."""
    squares = [h for h, w in config.image_grid_pinpoints if h == w]
    return max(squares) if squares else config.vision_config.image_size


def _llava_next_vision(config: PretrainedConfig) -> Tower:
    vision = config.vision_config
    crops = (
        _anyres_side(config) // vision.image_size
    ) ** 2 + 1  # the crops of the grid plus the resized whole
    return _vit(vision, crops * (_square_patches(vision) + 1))  # CLIP adds a class token


def _llava_next_tokens(config: PretrainedConfig) -> int:
    side = _anyres_side(config) // config.vision_config.patch_size
    return _square_patches(config.vision_config) + side * side + side  # base + grid, a newline per grid row


RULES: dict[str, VlmRule] = {
    rule.architecture: rule
    for rule in (
        VlmRule(
            "Gemma3ForConditionalGeneration",
            "model.language_model",
            lambda c: _vit(c.vision_config, _square_patches(c.vision_config)),
            lambda c: (
                c.mm_tokens_per_image + 4
            ),  # <start_of_image>, <end_of_image> and the blank lines around
            "medgemma-4b",
            # Gemma3Model builds its per-layer masks (bidirectional over image tokens, sliding windows) before its
            # language model runs, so a prefix added there would be masked out of every layer
            "Gemma 3 builds its attention masks (bidirectional over image tokens, sliding windows) before the "
            "language model runs, so learned prefixes cannot be added to them",
        ),
        VlmRule(
            "Qwen2_5_VLForConditionalGeneration",
            "model.language_model",
            _qwen_vision,
            _qwen_tokens,
            "lingshu-7b",
        ),
        VlmRule(
            "Qwen2VLForConditionalGeneration",
            "model.language_model",
            _qwen2_vision,
            _qwen_tokens,
            "qwen2-vl-2b",
        ),
        VlmRule(
            "Idefics3ForConditionalGeneration",
            "model.text_model",
            lambda c: _vit(c.vision_config, IDEFICS3_PLANNING_TILES * _square_patches(c.vision_config)),
            _idefics3_tokens,
            "smolvlm-256m",
        ),
        VlmRule(
            "InternVLForConditionalGeneration",
            "model.language_model",
            lambda c: _vit(c.vision_config, _square_patches(c.vision_config) + 1),  # InternViT's class token
            lambda c: (
                c.image_seq_length + 2
            ),  # one 448 px tile (a scan up to 633 px) between <img> and </img>
            "tiny-internvl",
        ),
        VlmRule(
            "LlavaNextForConditionalGeneration",
            "model.language_model",
            _llava_next_vision,
            _llava_next_tokens,
            "llava-next-mistral-7b",
        ),
    )
}


def supported() -> str:
    """Return the supported architectures as one readable list."""
    return ", ".join(sorted(RULES))


def rule_for(architectures: list[str] | str, where: object = "this model") -> VlmRule:
    """Return the rule of the first supported class in ``architectures``; CheckpointError when there is none."""
    names = [architectures] if isinstance(architectures, str) else list(architectures)
    for name in names:
        if name in RULES:
            return RULES[name]
    found = ", ".join(names) if names else "no architecture"
    raise CheckpointError(
        f"{where} holds {found}, which the vlm family has no rule for; it supports {supported()} "
        "(open an issue with the checkpoint's config.json to add one)"
    )


def rule_of(model: torch.nn.Module) -> VlmRule:
    """Return the rule of a built model (its class or, for a subclass, the class it derives from)."""
    names = [cls.__name__ for cls in type(model).__mro__]
    return rule_for([n for n in names if n in RULES] or [type(model).__name__], where="the model")


def text_stack(model: torch.nn.Module) -> torch.nn.Module:
    """Return the language model (decoder stack) of a vlm model."""
    return model.get_submodule(rule_of(model).text_stack)


def checkpoint_architectures(path: Path) -> list[str]:
    """Return the "architectures" a checkpoint folder's config.json lists (empty when it lists none)."""
    try:
        config = read_json(Path(path) / "config.json")
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{Path(path) / 'config.json'} cannot be read as JSON: {err}") from None
    return list(config.get("architectures") or [])


def preset_for_checkpoint(model_path: str | Path | None) -> Preset:
    """Return the real-shape preset of a checkpoint's architecture (MedGemma 4B's without a checkpoint)."""
    if model_path is None or not (Path(model_path).expanduser() / "config.json").is_file():
        return get_preset("medgemma-4b")
    path = Path(model_path).expanduser()
    return get_preset(rule_for(checkpoint_architectures(path), where=f"checkpoint {path}").default_preset)


def with_decoder_layer(preset: Preset, model: torch.nn.Module) -> Preset:
    """Return ``preset`` naming the loaded model's own decoder layer class (FSDP's unit), which its config decides."""
    return dataclasses.replace(preset, decoder_layer=decoder_layer_name(model))


def decoder_layer_name(model: torch.nn.Module) -> str:
    """Return the class name of the language model's decoder layers (FSDP wraps one unit per layer)."""
    return type(text_stack(model).layers[0]).__name__


def model_classes() -> dict[str, type[PreTrainedModel]]:
    """Return {architecture name: transformers class} for every supported architecture."""
    return {name: rule.model_class for name, rule in RULES.items()}
