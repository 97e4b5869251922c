"""Model presets: a named architecture of a family, built from a config, and its module groups."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # naming families and groups must not import transformers (`medtune --help` stays instant)
    from transformers import PretrainedConfig

Family = Literal["llava", "miss", "vlm"]

# Module groups of each family in the paper's order; a paradigm gives one state per group.
FAMILY_GROUPS: dict[str, tuple[str, ...]] = {
    "llava": ("vision_tower", "connector", "llm", "lm_head"),
    "miss": ("vit", "jtm", "dec"),
    # any supported image-text-to-text checkpoint; groups are found from its own module names (groups.py)
    "vlm": ("vision_tower", "connector", "llm", "lm_head"),
}
# Each family's text transformer stacks by group: (module name, is_bidirectional). Prefix tuning attaches its
# key/value prefixes there; a vlm checkpoint's stack depends on its architecture (core_models.vlm's rule).
TEXT_STACKS: dict[str, dict[str, tuple[str, bool]]] = {
    "llava": {"llm": ("model.language_model", False)},
    "miss": {"jtm": ("text_encoder", True), "dec": ("text_decoder.bert", False)},
}
ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class Preset:
    """A concrete architecture: how to make its config, its prompt template and bundled weights."""

    name: str
    family: Family
    description: str
    make_config: Callable[[], PretrainedConfig]
    template: str
    default_weights: Path | None = None  # a bundled HF-format checkpoint (the demo presets)
    decoder_layer: str | None = None  # class name FSDP wraps
    notes: dict[str, str] = field(default_factory=dict)

    def config(self) -> PretrainedConfig:
        """Return the config a model of this preset is built from: the bundled checkpoint's when there is one.

        The demo presets' bundled bases fix details ``make_config`` leaves open (the vocabulary their
        tokenizer ended with), so accounting on the meta device counts the very model ``train`` loads.
        """
        if self.default_weights is not None and (self.default_weights / "config.json").is_file():
            from transformers import AutoConfig

            return AutoConfig.from_pretrained(self.default_weights)
        return self.make_config()


PRESETS: dict[str, Preset] = {}
# The modules whose import registers the built-in presets; imported on the first lookup, not with the package.
BUILTIN_PRESET_MODULES = ("bench", "llava_med", "miss", "tiny", "vlm_presets", "vlm_tiny")


def register_builtin_presets() -> None:
    """Import the modules that register the built-in presets (once; later calls cost a dict lookup)."""
    for module in BUILTIN_PRESET_MODULES:
        importlib.import_module(f"medtune.core_models.{module}")


def register_preset(preset: Preset) -> Preset:
    """Add a preset to the registry and return it."""
    if preset.family not in FAMILY_GROUPS:
        raise ValueError(f"preset {preset.name!r} names unknown family {preset.family!r}")
    PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset:
    """Return the registered preset called ``name``, or raise a ValueError listing the known ones."""
    register_builtin_presets()
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown preset {name!r}; choose one of: {known}") from None


def default_preset(family: str, model_path: str | Path | None = None) -> Preset:
    """Return the preset `medtune train FAMILY METHOD` uses when none is named: the family's demo model.

    The vlm family has no demo model: with ``model_path`` its preset is the one of the checkpoint's own
    architecture (read from its config.json), without it MedGemma 4B's shape (for `medtune params`).
    """
    if family not in FAMILY_GROUPS:
        raise ValueError(f"unknown family {family!r}; choose one of: {', '.join(FAMILY_GROUPS)}")
    if family == "vlm":
        from medtune.core_models.vlm import preset_for_checkpoint

        return preset_for_checkpoint(model_path)
    return get_preset(f"tiny-{family}")
