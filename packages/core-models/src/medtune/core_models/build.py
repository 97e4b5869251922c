"""Build a preset's model, tokenizer and image processor: from a local checkpoint, bundled weights or random init."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BlipForQuestionAnswering,
    LlavaForConditionalGeneration,
    PreTrainedModel,
)

from medtune.core_models.presets import Preset, get_preset

MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "llava": LlavaForConditionalGeneration,
    "miss": BlipForQuestionAnswering,
}


@dataclass
class Built:
    """A ready model with what it needs to read inputs, and where its weights came from."""

    model: PreTrainedModel
    tokenizer: object | None
    image_processor: object | None
    preset: Preset
    source: str  # a checkpoint path, or "random init"
    processor: object | None = None  # the vlm family's: the checkpoint's own processor and chat template

    @property
    def family(self) -> str:
        return self.preset.family

    @property
    def num_image_tokens(self) -> int:
        """How many image-token positions one image occupies in the LLM's input (llava family)."""
        return image_token_count(self.model.config)

    @property
    def image_wrap(self) -> tuple[str, str] | None:
        """The tokens around an image's positions in the prompt: LLaVA-Med v1's <im_start>/<im_end>, or None."""
        if getattr(self.model.config, "mm_use_im_start_end", False):
            from medtune.core_models.tokenizer import V1_IMAGE_START_END

            return V1_IMAGE_START_END
        return None


def image_token_count(config) -> int:
    """Return the number of visual tokens LLaVA feeds the LLM per image for this config."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return patches + (1 if config.vision_feature_select_strategy == "full" else 0)


def build_random(
    preset: str | Preset, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """Return a randomly initialised model of the preset (``device="meta"`` allocates no memory)."""
    from medtune.core_models.model_class import build_model  # the subclass table imports this module

    return build_model(preset, device=device, dtype=dtype)


def load(
    preset: str | Preset,
    model_path: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    vision_tower: str | Path | None = None,
) -> Built:
    """Return the preset's model with weights from ``model_path`` (or its bundled demo weights).

    ``model_path`` may be an HF-format checkpoint or an original LLaVA-Med release (converted on load; its CLIP
    tower comes from ``vision_tower`` when the release folder lacks one).
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    path = Path(model_path).expanduser() if model_path is not None else preset.default_weights
    if path is None:
        raise ValueError(
            f"preset {preset.name!r} has no bundled weights; pass --model-path DIR with a local checkpoint "
            "(nothing is downloaded)"
        )
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise FileNotFoundError(f"model path {path} {what}; point --model-path at a local checkpoint folder")
    from medtune.core_models.model_class import model_class_for

    architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
    from medtune.core_models.convert import RELEASE_TEXT_CONFIGS, load_llava_med_release

    if any(a in RELEASE_TEXT_CONFIGS for a in architectures):
        return load_llava_med_release(preset, path, dtype=dtype, vision_tower=vision_tower)
    processor = None
    if preset.family == "vlm":  # an architecture without a rule, or no processor / chat template: say so first
        from medtune.core_models.vlm import rule_for
        from medtune.core_models.vlm_processor import load_processor

        rule_for(architectures, where=f"checkpoint {path}")
        processor = load_processor(path)
    model_cls = model_class_for(preset)
    if architectures and model_cls.__name__ not in architectures:
        raise ValueError(
            f"checkpoint {path} holds {', '.join(architectures)}, not a {preset.family} model "
            f"({model_cls.__name__}); choose a preset of the matching family"
        )
    model = model_cls.from_pretrained(path, dtype=dtype)
    if processor is not None:
        from medtune.core_models.vlm import with_decoder_layer

        tokenizer, image_processor = processor.tokenizer, processor.image_processor
        preset = with_decoder_layer(preset, model)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = load_image_processor(path)
    return Built(
        model=model,
        tokenizer=tokenizer,
        image_processor=image_processor,
        preset=preset,
        source=str(path),
        processor=processor,
    )


def load_image_processor(folder: Path):
    """Return the image processor saved in ``folder``, built by the class its preprocessor_config.json names.

    Some transformers 5.x releases (5.17, say) gate AutoImageProcessor itself on torchvision, while the named
    classes work without it; so the class is looked up directly (its PIL backend when torchvision is absent, as
    AutoImageProcessor picks in later releases), and AutoImageProcessor is the last resort.
    """
    file = Path(folder) / "preprocessor_config.json"
    name = json.loads(file.read_text()).get("image_processor_type", "") if file.is_file() else ""
    base = name.removesuffix("Fast").removesuffix("Pil")
    candidates = [f"{base}Pil"] if base and importlib.util.find_spec("torchvision") is None else []
    for candidate in [*candidates, base]:
        cls = getattr(transformers, candidate, None) if candidate else None
        if cls is not None:
            return cls.from_pretrained(folder)
    return AutoImageProcessor.from_pretrained(folder)
