"""Which transformers class builds a preset, and building one from its config on any device."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from medtune.core_models.build import MODEL_CLASSES
from medtune.core_models.llava_med import LinearConnectorLlava
from medtune.core_models.presets import Preset, get_preset
from medtune.core_models.vlm import model_classes

# Presets whose architecture needs a subclass of the family's class (named in Preset.notes["model_class"]).
# The vlm family's presets name their transformers class the same way.
SPECIAL_CLASSES: dict[str, type[PreTrainedModel]] = {
    LinearConnectorLlava.__name__: LinearConnectorLlava,
    **model_classes(),
}


def model_class_for(preset: str | Preset) -> type[PreTrainedModel]:
    """Return the class that builds ``preset`` (the family's class unless the preset names a subclass)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    named = SPECIAL_CLASSES.get(preset.notes.get("model_class", ""))
    return named if named is not None else MODEL_CLASSES[preset.family]


def build_model(
    preset: str | Preset, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """Return a randomly initialised model of ``preset`` built by its own class (``device="meta"``: no memory)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    config = preset.config()
    with torch.device(device):
        return model_class_for(preset)._from_config(config, dtype=dtype)
