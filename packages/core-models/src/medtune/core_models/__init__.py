"""medtune.core_models: Med-VLM presets, builders, checkpoint loading and module groups.

Names resolve on first use, so that naming ``FAMILY_GROUPS`` or ``get_preset`` (the `medtune` parser's
modules do) imports neither torch nor transformers; the built-in presets register on the first lookup.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Where each public name lives.
_HOMES = {
    "FAMILY_GROUPS": "presets",
    "PRESETS": "presets",
    "Preset": "presets",
    "default_preset": "presets",
    "get_preset": "presets",
    "register_preset": "presets",
    "GROUP_PREFIXES": "groups",
    "group_of": "groups",
    "CheckpointError": "errors",
    "Built": "build",
    "build_random": "build",
    "image_token_count": "build",
    "load": "build",
    "IMAGE_TOKEN": "tokenizer",
    "build_word_tokenizer": "tokenizer",
}

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


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'medtune.core_models' has no attribute {name!r}")
    if name == "PRESETS":  # the registry itself (the lookup functions register the built-ins when called)
        from medtune.core_models.presets import register_builtin_presets

        register_builtin_presets()
    value = getattr(importlib.import_module(f"medtune.core_models.{_HOMES[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


if TYPE_CHECKING:
    from medtune.core_models.build import Built, build_random, image_token_count, load
    from medtune.core_models.errors import CheckpointError
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
