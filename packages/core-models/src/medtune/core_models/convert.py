"""Load the original LLaVA-Med release layout (LlavaLlama/LlavaMistralForCausalLM) into transformers' Llava classes."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import (
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.initialization import no_init_weights

from medtune.core_models.build import Built, load_image_processor
from medtune.core_models.llava_med import LinearConnectorLlava
from medtune.core_models.presets import Preset, get_preset
from medtune.core_models.tokenizer import IMAGE_TOKEN, V1_IMAGE_PATCH

RELEASE_TEXT_CONFIGS: dict[str, type[PretrainedConfig]] = {
    "LlavaLlamaForCausalLM": LlamaConfig,  # LLaVA-Med v1 (LLaMA-7B)
    "LlavaMistralForCausalLM": MistralConfig,  # LLaVA-Med v1.5 (Mistral-7B)
}
RELEASE_PRESETS = {"LlavaLlamaForCausalLM": "llava-med-v1", "LlavaMistralForCausalLM": "llava-med-v1.5"}
PROJECTOR_TYPES = ("linear", "mlp2x_gelu")
# OpenAI CLIP's normalisation, what every LLaVA-Med vision tower was trained with.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Buffers some older checkpoints persisted; transformers recomputes them, so they are neither weights nor strangers.
RECOMPUTED_BUFFERS = ("rotary_emb.inv_freq", "embeddings.position_ids")
# Parts of a full CLIP checkpoint (the separate vision-tower folder) that LLaVA does not use.
UNUSED_CLIP_PARTS = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")
# Release names are the LLM's own names under "model."; transformers' Llava nests the LLM under model.language_model.
TEXT_PARTS = ("model.embed_tokens.", "model.layers.", "model.norm.")


def release_architecture(path: str | Path) -> str | None:
    """Return the original release architecture named in ``path``/config.json, or None for any other checkpoint."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    found = [
        a for a in json.loads(config.read_text()).get("architectures") or [] if a in RELEASE_TEXT_CONFIGS
    ]
    return found[0] if found else None


def is_llava_med_release(path: str | Path) -> bool:
    """Return True when ``path`` holds an original LLaVA-Med release (LlavaLlama/LlavaMistralForCausalLM)."""
    return release_architecture(path) is not None


def checkpoint_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) from a folder's safetensors or pytorch_model*.bin weights, one shard at a time."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            break
    else:
        files = [n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()][:1]
    if not files:
        raise FileNotFoundError(
            f"{folder} has no weights (model.safetensors, pytorch_model.bin, or a sharded index json); "
            "point at the checkpoint folder itself"
        )
    for name in files:
        file = folder / name
        if not file.is_file():
            raise FileNotFoundError(f"{folder} lists shard {name} in its index but the file is missing")
        if name.endswith(".safetensors"):
            with safe_open(file, framework="pt") as shard:
                for key in shard.keys():  # noqa: SIM118  (safe_open is not iterable)
                    yield key, shard.get_tensor(key)
        else:
            # mmap: a 10 GB shard is paged in tensor by tensor instead of read whole.
            yield from torch.load(file, map_location="cpu", weights_only=True, mmap=True).items()


def release_text_config(raw: dict, arch: str, vocab_size: int) -> PretrainedConfig:
    """Return the LLM config from the release's top-level LLaMA/Mistral keys, with ``vocab_size`` rows."""
    config_cls = RELEASE_TEXT_CONFIGS[arch]
    skip = {
        "architectures",
        "model_type",
        "_name_or_path",
        "transformers_version",
        "dtype",
        "id2label",
        "label2id",
    }
    known = (set(config_cls().to_dict()) | {"rope_theta", "rope_scaling"}) - skip
    kwargs = {k: v for k, v in raw.items() if k in known}
    kwargs["vocab_size"] = vocab_size
    kwargs.setdefault("tie_word_embeddings", False)
    return config_cls(**kwargs)


def vision_tower_folder(raw: dict, path: Path, vision_tower: str | Path | None) -> Path | None:
    """Return the separate CLIP folder: ``vision_tower`` if given, else ``mm_vision_tower`` if it is a local folder."""
    if vision_tower is not None:
        folder = Path(vision_tower).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"vision tower folder {folder} has no config.json; pass a CLIP checkpoint folder"
            )
        return folder
    named = raw.get("mm_vision_tower")
    for folder in (Path(named).expanduser(), path / named) if named else ():
        if (folder / "config.json").is_file():
            return folder
    return None


def release_config(preset: Preset, raw: dict, arch: str, vision: CLIPVisionConfig, vocab: int, image_id: int):
    """Return the LlavaConfig for a release config.json: its LLM keys, its mm_* choices, the given vision config."""
    projector = raw.get(
        "mm_projector_type", "linear"
    )  # LLaVA's own default when the key is absent (v0 recipe)
    if projector not in PROJECTOR_TYPES:
        raise ValueError(
            f"mm_projector_type {projector!r} in the config.json is not supported; medtune converts "
            f"{' or '.join(PROJECTOR_TYPES)} connectors"
        )
    select = raw.get("mm_vision_select_feature", "patch")
    if select not in ("patch", "cls_patch"):
        raise ValueError(
            f"mm_vision_select_feature {select!r} in the config.json is not 'patch' or 'cls_patch'"
        )
    config = LlavaConfig(
        vision_config=vision,
        text_config=release_text_config(raw, arch, vocab),
        image_token_index=image_id,
        image_seq_length=(vision.image_size // vision.patch_size) ** 2,
        vision_feature_layer=raw.get("mm_vision_select_layer", -1),
        vision_feature_select_strategy="default" if select == "patch" else "full",
        projector_hidden_act="gelu",
    )
    config.mm_projector_type = projector
    # v1 prompts wrapped the image in <im_start>/<im_end>: the LLaVA collator does the same when this is set.
    config.mm_use_im_start_end = bool(raw.get("mm_use_im_start_end", False))
    model_cls = LinearConnectorLlava if projector == "linear" else LlavaForConditionalGeneration
    config.architectures = [model_cls.__name__]
    return config, model_cls


def home_of(name: str, vision_prefix: str, *, from_clip: bool = False) -> str | None:
    """Return the Llava parameter name for a release tensor name, None for a tensor to skip, or the name unchanged."""
    if name.endswith(RECOMPUTED_BUFFERS):
        return None
    if from_clip:
        if name.startswith(UNUSED_CLIP_PARTS):
            return None
        # OpenAI's CLIP files say vision_model.*; transformers 5 saves a CLIPVisionModel without that prefix.
        return vision_prefix + name.removeprefix("vision_model.")
    if name.startswith("model.vision_tower.vision_tower.vision_model."):
        return vision_prefix + name.removeprefix("model.vision_tower.vision_tower.vision_model.")
    if name.startswith("model.mm_projector."):
        rest = name.removeprefix("model.mm_projector.")
        layer = {"0.": "linear_1.", "2.": "linear_2."}.get(rest[:2])
        return "model.multi_modal_projector." + (layer + rest[2:] if layer else "linear_1." + rest)
    if name.startswith(TEXT_PARTS):
        return "model.language_model." + name.removeprefix("model.")
    return name


def fill(model: PreTrainedModel, sources: list[tuple[Path, bool]], vision_prefix: str) -> set[str]:
    """Copy every checkpoint tensor into its home in ``model``; return the names of padded embeddings.

    Raises ValueError naming the unexpected, missing and mis-shaped tensors when the checkpoint does not fit.
    """
    params = dict(model.named_parameters())
    filled: set[str] = set()
    padded: set[str] = set()
    unexpected, mismatched = [], []
    for folder, from_clip in sources:
        for name, tensor in checkpoint_tensors(folder):
            home = home_of(name, vision_prefix, from_clip=from_clip)
            if home is None:
                continue
            target = params.get(home)
            if target is None:
                unexpected.append(f"{name} ({folder})" if from_clip else name)
                continue
            rows_only = home.endswith(("embed_tokens.weight", "lm_head.weight")) and tensor.dim() == 2
            if tensor.shape == target.shape:
                target.data.copy_(tensor)
            elif rows_only and tensor.shape[1] == target.shape[1] and tensor.shape[0] < target.shape[0]:
                # New token rows start at the mean embedding, so an added token begins as an "average" word.
                target.data[: tensor.shape[0]].copy_(tensor)
                target.data[tensor.shape[0] :] = tensor.float().mean(0).to(target.dtype)
                padded.add(f"{home} {tensor.shape[0]}->{target.shape[0]} rows")
            else:
                mismatched.append(f"{name} {tuple(tensor.shape)} vs {home} {tuple(target.shape)}")
                continue
            filled.add(home)
    missing = [n for n in params if n not in filled]
    if unexpected or missing or mismatched:
        raise ValueError(
            f"checkpoint {sources[0][0]} does not fit the converted LLaVA model: "
            + "; ".join(
                f"{len(names)} {what} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
                for what, names in (
                    ("unexpected tensors", unexpected),
                    ("missing tensors", missing),
                    ("tensors of the wrong shape", mismatched),
                )
                if names
            )
            + "; check that the folder is a complete LLaVA-Med release and the preset matches it"
        )
    return padded


def release_tokenizer(path: Path):
    """Return (the folder's tokenizer, its image token): ``<image>``, else v1's ``<im_patch>``, else ``<image>`` added.

    LLaVA-Med v1 (the LLaVA v0 recipe) replaced its ``<im_patch>`` positions with image features, which is
    exactly Llava's image token, so a v1 vocabulary is kept as released (no row is added or padded).
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"cannot read a tokenizer from {path} ({err}); the release folder needs one"
        ) from None
    vocab = tokenizer.get_vocab()
    for token in (IMAGE_TOKEN, V1_IMAGE_PATCH):
        if token in vocab:
            return tokenizer, token
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    warnings.warn(
        f"the tokenizer in {path} has no {IMAGE_TOKEN}; added it as id {len(tokenizer) - 1}", stacklevel=3
    )
    return tokenizer, IMAGE_TOKEN


def release_image_processor(folders: list[Path], image_size: int):
    """Return the first folder's image processor, else a CLIP processor at ``image_size`` with CLIP's mean/std."""
    for folder in folders:
        if (folder / "preprocessor_config.json").is_file():
            return load_image_processor(folder)
    warnings.warn(
        f"no preprocessor_config.json in {', '.join(map(str, folders))}; using a CLIPImageProcessor at "
        f"{image_size} px with OpenAI CLIP's mean/std",
        stacklevel=3,
    )
    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )


def load_llava_med_release(
    preset: str | Preset,
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    vision_tower: str | Path | None = None,
) -> Built:
    """Return the release checkpoint at ``path`` as a Llava model (every tensor placed, every weight filled)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    path = Path(path).expanduser()
    arch = release_architecture(path)
    if arch is None:
        raise ValueError(f"{path}/config.json names neither {' nor '.join(RELEASE_TEXT_CONFIGS)}")
    if preset.family != "llava" or preset.notes.get("original_architecture") != arch:
        raise ValueError(
            f"checkpoint {path} is an original {arch} release, which preset {preset.name!r} does not describe; "
            f"pass --preset {RELEASE_PRESETS[arch]}"
        )
    raw = json.loads((path / "config.json").read_text())
    weight_names = {name for name, _ in _names(path)}
    tower_inside = any(n.startswith("model.vision_tower.vision_tower.") for n in weight_names)
    tower = vision_tower_folder(raw, path, vision_tower)
    if not tower_inside and tower is None:
        raise FileNotFoundError(
            f"checkpoint {path} has no vision tower weights and its mm_vision_tower "
            f"{raw.get('mm_vision_tower')!r} is not a local folder; pass the CLIP checkpoint folder with "
            f"--vision-tower DIR (load(..., vision_tower=DIR)) or set mm_vision_tower in {path / 'config.json'} "
            "to it (nothing is downloaded)"
        )
    vision = (
        CLIPVisionConfig.from_pretrained(tower) if tower is not None else preset.make_config().vision_config
    )
    tokenizer, image_token = release_tokenizer(path)
    rows = max(
        n for n in (_rows(path, "model.embed_tokens.weight"), raw.get("vocab_size", 0)) if n is not None
    )
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    vocab = max(rows, preset.make_config().text_config.vocab_size, image_id + 1)
    config, model_cls = release_config(preset, raw, arch, vision, vocab, image_id)
    with no_init_weights():
        model = model_cls._from_config(config, dtype=dtype)
    names = {n for n, _ in model.named_parameters()}
    vision_prefix = next(
        (p for p in ("model.vision_tower.vision_model.",) if any(n.startswith(p) for n in names)),
        "model.vision_tower.",
    )
    sources = [(path, False)] + ([(tower, True)] if not tower_inside else [])
    padded = fill(model, sources, vision_prefix)
    if padded:
        warnings.warn(
            f"{path}: padded {', '.join(sorted(padded))} with the mean embedding (image token {image_token} = "
            f"{image_id}, vocabulary {vocab})",
            stacklevel=2,
        )
    model.eval()
    folders = [path] + ([tower] if tower is not None else [])
    image_processor = release_image_processor(folders, vision.image_size)
    return Built(
        model=model, tokenizer=tokenizer, image_processor=image_processor, preset=preset, source=str(path)
    )


def _names(folder: Path) -> Iterator[tuple[str, Path]]:
    """Yield (tensor name, file) from a folder's index json, or from its single weights file's header."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index_name).is_file():
            for name, file in json.loads((folder / index_name).read_text())["weight_map"].items():
                yield name, folder / file
            return
    if (folder / "model.safetensors").is_file():
        with safe_open(folder / "model.safetensors", framework="pt") as shard:
            for name in shard.keys():  # noqa: SIM118  (safe_open is not iterable)
                yield name, folder / "model.safetensors"
        return
    for name, _ in checkpoint_tensors(folder):  # a single .bin must be read to list it
        yield name, folder / "pytorch_model.bin"


def _rows(folder: Path, name: str) -> int | None:
    """Return the first dimension of tensor ``name`` in ``folder`` without reading other tensors, or None."""
    for found, file in _names(folder):
        if found == name:
            if file.suffix == ".safetensors":
                with safe_open(file, framework="pt") as shard:
                    return shard.get_slice(name).get_shape()[0]
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)[name].shape[0]
    return None
