"""medtune.core_models: Med-VLM presets, builders, checkpoint loading and module groups."""

from medtune.core_models import bench, llava_med, miss, tiny  # noqa: F401  (registers the presets)
from medtune.core_models.errors import CheckpointError
from medtune.core_models.build import Built, build_random, image_token_count, load
from medtune.core_models.groups import GROUP_PREFIXES, group_of
from medtune.core_models.presets import (
    FAMILY_GROUPS,
    PRESETS,
    Preset,
    default_preset,
    get_preset,
    register_preset,
)
from medtune.core_models.tokenizer import IMAGE_TOKEN, build_word_tokenizer

__all__ = [
    "FAMILY_GROUPS",
    "GROUP_PREFIXES",
    "IMAGE_TOKEN",
    "PRESETS",
    "Built",
    "CheckpointError",
    "Preset",
    "build_random",
    "build_word_tokenizer",
    "default_preset",
    "get_preset",
    "group_of",
    "image_token_count",
    "load",
    "register_preset",
]
