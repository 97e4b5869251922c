"""Load the original LLaVA-Med release layout (LlavaLlama/LlavaMistralForCausalLM) into transformers' Llava classes."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from torch import nn
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
from medtune.core_models.errors import CheckpointError, read_json
from medtune.core_models.llava_med import LinearConnectorLlava
from medtune.core_models.presets import Preset, get_preset
from medtune.core_models.tokenizer import IMAGE_TOKEN, V1_IMAGE_PATCH
from medtune.core_models.weights import check_files, open_shard, returned_to_the_system

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
    found = [a for a in read_json(config).get("architectures") or [] if a in RELEASE_TEXT_CONFIGS]
    return found[0] if found else None


def is_llava_med_release(path: str | Path) -> bool:
    """Return True when ``path`` holds an original LLaVA-Med release (LlavaLlama/LlavaMistralForCausalLM)."""
    return release_architecture(path) is not None


def checkpoint_tensors(files: dict[str, Path]) -> Iterator[tuple[str, Path, torch.Tensor]]:
    """Yield (name, file, tensor) for every tensor in ``files`` (name -> file), one tensor in memory at a time."""
    by_file: dict[Path, list[str]] = {}
    for name, file in files.items():
        by_file.setdefault(file, []).append(name)
    for file, names in sorted(by_file.items()):
        if file.suffix == ".safetensors":
            with open_shard(file) as shard:
                for name in names:
                    yield name, file, shard.get_tensor(name)
        else:
            # mmap: a 10 GB shard is paged in tensor by tensor instead of read whole.
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            for name in names:
                yield name, file, state[name]
            del state


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


def fill(
    model: PreTrainedModel,
    sources: list[tuple[Path, bool, dict[str, Path]]],
    vision_prefix: str,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[set[str], dict[str, str]]:
    """Move every checkpoint tensor into its home in ``model`` (parameters on the meta device), one at a time.

    An NF4 layer's weight is quantised as it arrives, so no more than one frozen weight is ever held in full
    precision. Returns (the padded embeddings, model name -> checkpoint name for every renamed tensor). Raises
    CheckpointError naming the file and the tensor when the checkpoint does not fit the model.
    """
    from medtune.core_models.quantize import place_nf4_weight

    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    filled: set[str] = set()
    padded: set[str] = set()
    renamed: dict[str, str] = {}
    for _, from_clip, files in sources:
        for name, file, tensor in checkpoint_tensors(files):
            home = home_of(name, vision_prefix, from_clip=from_clip)
            if home is None:
                continue
            target = params.get(home)
            if target is None:
                raise CheckpointError(
                    f"checkpoint {file} does not fit the converted LLaVA model: unexpected tensor {name} (it "
                    f"would be {home}); "
                    "check that the folder is a LLaVA-Med release and the preset matches it"
                )
            module_name, _, param_name = home.rpartition(".")
            module = modules[module_name]
            rows_only = home.endswith(("embed_tokens.weight", "lm_head.weight")) and tensor.dim() == 2
            if tensor.shape == target.shape:
                value = tensor.to(dtype)
            elif rows_only and tensor.shape[1] == target.shape[1] and tensor.shape[0] < target.shape[0]:
                # New token rows start at the mean embedding, so an added token begins as an "average" word.
                value = torch.empty(target.shape, dtype=dtype)
                value[: tensor.shape[0]] = tensor
                value[tensor.shape[0] :] = tensor.float().mean(0).to(dtype)
                padded.add(f"{home} {tensor.shape[0]}->{target.shape[0]} rows")
            else:
                raise CheckpointError(
                    f"checkpoint {file} does not fit the converted LLaVA model: tensor {name} has shape "
                    f"{tuple(tensor.shape)}, but {home} needs "
                    f"{tuple(target.shape)}; check that the preset matches the checkpoint"
                )
            if param_name == "weight" and place_nf4_weight(module, value, device):
                pass
            else:
                setattr(
                    module,
                    param_name,
                    nn.Parameter(value.to(device), requires_grad=value.is_floating_point()),
                )
            del tensor, value
            filled.add(home)
            if home != name:
                renamed[home] = name
    missing = [n for n in params if n not in filled]
    if missing:
        raise CheckpointError(
            f"checkpoint {sources[0][0]} does not fit the converted LLaVA model: {len(missing)} missing tensors "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); check that the folder is a "
            "complete LLaVA-Med release (pass --vision-tower DIR when its CLIP tower is a separate folder)"
        )
    return padded, renamed


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


def release_parts(preset: Preset, path: Path, vision_tower: str | Path | None) -> dict:
    """Return what converting a release needs before any weight is read: config, class, files, tokenizer, tower."""
    arch = release_architecture(path)
    if arch is None:
        raise ValueError(f"{path}/config.json names neither {' nor '.join(RELEASE_TEXT_CONFIGS)}")
    if preset.family != "llava" or preset.notes.get("original_architecture") != arch:
        raise ValueError(
            f"checkpoint {path} is an original {arch} release, which preset {preset.name!r} does not describe; "
            f"pass --preset {RELEASE_PRESETS[arch]}"
        )
    raw = read_json(path / "config.json")
    files = check_files(path)
    tower_inside = any(n.startswith("model.vision_tower.vision_tower.") for n in files)
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
        n for n in (_rows(files, "model.embed_tokens.weight"), raw.get("vocab_size", 0)) if n is not None
    )
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    vocab = max(rows, preset.make_config().text_config.vocab_size, image_id + 1)
    config, model_cls = release_config(preset, raw, arch, vision, vocab, image_id)
    return dict(config=config, model_cls=model_cls, files=files, tower=tower, tower_inside=tower_inside,
                tokenizer=tokenizer, image_token=image_token, image_id=image_id, vocab=vocab, vision=vision)  # fmt: skip


def release_meta_model(preset: str | Preset, path: str | Path, vision_tower=None) -> PreTrainedModel:
    """Return the Llava model a release converts into, on the meta device (no weight is read)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    parts = release_parts(preset, Path(path).expanduser(), vision_tower)
    with torch.device("meta"):
        return parts["model_cls"]._from_config(parts["config"])


def empty_model(model_cls, config: PretrainedConfig, dtype: torch.dtype, four_bit) -> PreTrainedModel:
    """Return ``model_cls`` of ``config`` with its parameters on the meta device (NF4 layers under ``four_bit``).

    Buffers (rotary frequencies, position ids) are computed as usual.
    """
    with no_init_weights(), init_empty_weights(include_buffers=False):
        model = model_cls._from_config(config, dtype=dtype)
    if four_bit is not None:
        from medtune.core_models.quantize import nf4_layers

        nf4_layers(model, four_bit, compute_dtype=dtype)
    return model


def load_llava_med_release(
    preset: str | Preset,
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    vision_tower: str | Path | None = None,
    four_bit=None,
    device: torch.device | None = None,
) -> Built:
    """Return the release checkpoint at ``path`` as a Llava model (every tensor placed, every weight filled).

    Streams: the model is built without weights, and each tensor goes to ``device`` in ``dtype`` (or into NF4
    under ``four_bit``, a quantize.FourBit) as it is read.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    path = Path(path).expanduser()
    device = device if device is not None else torch.device("cpu")
    parts = release_parts(preset, path, vision_tower)
    config, model_cls, files, tower = parts["config"], parts["model_cls"], parts["files"], parts["tower"]
    tokenizer, image_token, image_id, vocab = (
        parts[k] for k in ("tokenizer", "image_token", "image_id", "vocab")
    )
    tower_inside, vision = parts["tower_inside"], parts["vision"]
    sources = [(path, False, files)] + ([(tower, True, check_files(tower))] if not tower_inside else [])
    # The empty model is built inside the block too: each parameter is allocated before it moves to the meta
    # device, and glibc's heap would otherwise keep those blocks and serve the filled tensors from them, page by
    # page resident for good (1.4 GB more peak at 0.8B parameters, measured with bench_loading.py).
    with returned_to_the_system():
        model = empty_model(model_cls, config, dtype, four_bit)
        names = {n for n, _ in model.named_parameters()}
        vision_prefix = next(
            (p for p in ("model.vision_tower.vision_model.",) if any(n.startswith(p) for n in names)),
            "model.vision_tower.",
        )
        padded, renamed = fill(model, sources, vision_prefix, dtype=dtype, device=device)
    quantized: list[str] = []
    if four_bit is not None:
        from medtune.core_models.quantize import keep_cpu_layout, quantized_names

        keep_cpu_layout(model)
        quantized = quantized_names(model)
    if padded:
        warnings.warn(
            f"{path}: padded {', '.join(sorted(padded))} with the mean embedding (image token {image_token} = "
            f"{image_id}, vocabulary {vocab})",
            stacklevel=2,
        )
    model.eval()
    folders = [path] + ([tower] if tower is not None else [])
    image_processor = release_image_processor(folders, vision.image_size)
    weight_files = {name: file for _, _, f in sources for name, file in f.items()}
    return Built(
        model=model,
        tokenizer=tokenizer,
        image_processor=image_processor,
        preset=preset,
        source=str(path),
        dtype=dtype,
        quantized=tuple(quantized),
        weight_files=weight_files,
        renamed=renamed,
    )


def _rows(files: dict[str, Path], name: str) -> int | None:
    """Return the first dimension of tensor ``name`` without reading it (or any other tensor), or None."""
    file = files.get(name)
    if file is None:
        return None
    if file.suffix == ".safetensors":
        with safe_open(file, framework="pt") as shard:
            return shard.get_slice(name).get_shape()[0]
    return torch.load(file, map_location="meta", weights_only=True, mmap=True)[name].shape[0]
