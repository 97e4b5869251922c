"""Load a vlm checkpoint's own processor (tokenizer, image processor, chat template) from its folder.

transformers builds Qwen-VL's and InternVL's processors with a video processor, and its video processors need
torchvision; medtune feeds still images only, so without torchvision the processor is assembled from the folder's
tokenizer, image processor and chat template by an image-only subclass of the checkpoint's own processor class.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import transformers
from transformers import AutoTokenizer, InternVLProcessor, Qwen2_5_VLProcessor, Qwen2VLProcessor

from medtune.core_models.errors import CheckpointError, read_json

CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


class _ImageOnly:
    """Mixin: the processor without its video processor (which transformers cannot build without torchvision)."""

    # processor_config.json keys the processor's own __init__ takes besides its parts
    init_keys: tuple[str, ...] = ()

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


class ImageOnlyQwen2_5_VLProcessor(_ImageOnly, Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor for still images."""


class ImageOnlyQwen2VLProcessor(_ImageOnly, Qwen2VLProcessor):
    """Qwen2-VL's processor for still images."""


class ImageOnlyInternVLProcessor(_ImageOnly, InternVLProcessor):
    """InternVL's processor for still images."""

    init_keys = ("image_seq_length",)


IMAGE_ONLY = {
    "Qwen2_5_VLProcessor": ImageOnlyQwen2_5_VLProcessor,
    "Qwen2VLProcessor": ImageOnlyQwen2VLProcessor,
    "InternVLProcessor": ImageOnlyInternVLProcessor,
}


def processor_class_name(path: Path) -> str:
    """Return the processor class a checkpoint folder's processor/preprocessor config names ("" if none)."""
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        file = path / name
        if file.is_file():
            value = read_json(file).get("processor_class")
            if value:
                return value
    return ""


def read_chat_template(path: Path) -> str | None:
    """Return the chat template saved in ``path`` (chat_template.jinja or the legacy chat_template.json)."""
    jinja, legacy = (path / n for n in CHAT_TEMPLATE_FILES)
    if jinja.is_file():
        return jinja.read_text()
    if legacy.is_file():
        return read_json(legacy).get("chat_template")
    return None


def load_processor(path: str | Path):
    """Return the checkpoint's own processor; CheckpointError when it has none or no chat template."""
    path = Path(path)
    name = processor_class_name(path)
    try:
        if name in IMAGE_ONLY and importlib.util.find_spec("torchvision") is None:
            from medtune.core_models.build import load_image_processor

            cls = IMAGE_ONLY[name]
            config = (
                read_json(path / "processor_config.json")
                if (path / "processor_config.json").is_file()
                else {}
            )
            processor = cls(
                load_image_processor(path),
                AutoTokenizer.from_pretrained(path),
                read_chat_template(path),
                **{k: config[k] for k in cls.init_keys if k in config},
            )
        else:
            processor = transformers.AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"checkpoint {path} has no processor medtune can load ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); the vlm family reads prompts and images "
            "through the checkpoint's own processor, so copy its processor files (processor_config.json or "
            "preprocessor_config.json, the tokenizer files, the chat template) into the folder"
        ) from None
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise CheckpointError(
            f"checkpoint {path} loads a {type(processor).__name__}, not an image-and-text processor; the vlm "
            "family needs the checkpoint's multimodal processor (its preprocessor_config.json and tokenizer files)"
        )
    if not getattr(processor, "chat_template", None):
        raise CheckpointError(
            f"checkpoint {path} has no chat template (chat_template.jinja, chat_template.json, or chat_template "
            "in tokenizer_config.json); the vlm family writes prompts with the checkpoint's own template, so "
            "copy the one its release ships into the folder"
        )
    return processor


def save_processor(processor, folder: str | Path) -> None:
    """Save ``processor`` as its release lays it out, also when it is the image-only Qwen-VL processor."""
    folder = Path(folder)
    if not isinstance(processor, tuple(IMAGE_ONLY.values())):
        processor.save_pretrained(folder)
        return
    processor.tokenizer.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(processor.chat_template)
    base = next(c.__name__ for c in type(processor).__mro__ if c.__name__ in IMAGE_ONLY)
    config = {"processor_class": base, **{k: getattr(processor, k) for k in processor.init_keys}}
    (folder / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")
