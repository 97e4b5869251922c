"""Build a preset's model, tokenizer and image processor: from a local checkpoint, bundled weights or random init."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
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

from medtune.core_models.errors import read_json
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
    dtype: torch.dtype = torch.float32  # what the frozen weights were loaded in
    quantized: tuple[str, ...] = ()  # the linear layers loaded as NF4
    weight_files: dict[str, Path] = field(default_factory=dict)  # checkpoint tensor name -> file
    # model tensor name -> checkpoint name, for the tensors whose names differ
    renamed: dict[str, str] = field(default_factory=dict)
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


DTYPE_FLAGS: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def checkpoint_dtype(path: str | Path | None, preset: Preset) -> torch.dtype:
    """Return the dtype ``path``'s config.json stores its weights in (the bundled weights' when None; fp32 if unsaid)."""
    from medtune.core_models.weights import config_dtype

    folder = Path(path).expanduser() if path is not None else preset.default_weights
    file = folder / "config.json" if folder is not None else None
    if file is None or not file.is_file():
        return torch.float32
    return config_dtype(read_json(file)) or torch.float32


def train_dtype(
    requested: str | None, path: str | Path | None, preset: Preset, device: torch.device
) -> torch.dtype:
    """Return the dtype a run loads its frozen weights in, for ``--dtype`` ``requested`` (None or "auto": the default).

    On a GPU the default is the checkpoint's own 16-bit dtype (bf16 for a 32-bit checkpoint, the paper's
    precision). On the CPU it is fp32: half-precision matmuls there are slow or missing, and the half-precision
    checkpoint is widened tensor by tensor as it loads, so the load peak stays one tensor above the model.
    """
    if requested not in (None, "auto"):
        if requested not in DTYPE_FLAGS:
            raise ValueError(f"--dtype {requested!r} is not one of auto, {', '.join(DTYPE_FLAGS)}")
        return DTYPE_FLAGS[requested]
    if device.type != "cuda":
        return torch.float32
    stored = checkpoint_dtype(path, preset)
    return stored if stored in (torch.float16, torch.bfloat16) else torch.bfloat16


def check_device_runs(dtype: torch.dtype, device: torch.device, source: str) -> None:
    """Raise CheckpointError when ``device`` cannot compute in ``dtype`` (bf16 on a pre-Ampere GPU, say)."""
    from medtune.core_models.errors import CheckpointError

    try:
        a = torch.ones(2, 2, dtype=dtype, device=device)
        (a @ a).sum().item()
    except (RuntimeError, TypeError) as err:
        raise CheckpointError(
            f"{source}: this {device.type} device cannot compute in {str(dtype).removeprefix('torch.')} "
            f"({str(err).splitlines()[0]}); pass --dtype with one it runs (fp32 always works; fp16 on GPUs "
            "without bf16)"
        ) from None
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise CheckpointError(
            f"{source}: {torch.cuda.get_device_name(device)} has no bf16 arithmetic; pass --dtype fp16 (or fp32)"
        )


def resolve_load_dtype(dtype: torch.dtype | str | None, path: Path, preset: Preset) -> torch.dtype:
    """Return ``dtype`` as a torch dtype: None or "auto" is the checkpoint's own, a flag name (bf16, ...) its dtype."""
    if dtype is None or dtype == "auto":
        return checkpoint_dtype(path, preset)
    if isinstance(dtype, str):
        if dtype not in DTYPE_FLAGS:
            raise ValueError(f"dtype {dtype!r} is not one of auto, {', '.join(DTYPE_FLAGS)}")
        return DTYPE_FLAGS[dtype]
    return dtype


def checkpoint_folder(preset: Preset, model_path: str | Path | None) -> Path:
    """Return the folder to load ``preset`` from (``model_path`` or the bundled weights), checked to hold a config."""
    path = Path(model_path).expanduser() if model_path is not None else preset.default_weights
    if path is None:
        raise ValueError(
            f"preset {preset.name!r} has no bundled weights; pass --model-path DIR with a local checkpoint "
            "(nothing is downloaded)"
        )
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise FileNotFoundError(f"model path {path} {what}; point --model-path at a local checkpoint folder")
    return path


def load(
    preset: str | Preset,
    model_path: str | Path | None = None,
    *,
    dtype: torch.dtype | str | None = torch.float32,
    four_bit=None,
    device: str | torch.device | None = None,
    vision_tower: str | Path | None = None,
) -> Built:
    """Return the preset's model with weights from ``model_path`` (or its bundled demo weights).

    ``model_path`` may be an HF-format checkpoint or an original LLaVA-Med release (converted on load; its CLIP
    tower comes from ``vision_tower`` when the release folder lacks one). ``dtype``: None or "auto" loads the
    checkpoint's own dtype. ``four_bit`` (a quantize.FourBit) loads every frozen linear as NF4 while reading it,
    tensor by tensor, so the model never exists in full precision; ``device``: where the tensors go as they load.
    A checkpoint that cannot be loaded as asked raises CheckpointError naming the file and the tensor.
    """
    from medtune.core_models.errors import CheckpointError
    from medtune.core_models.weights import check_files, pread_slices, returned_to_the_system

    preset = get_preset(preset) if isinstance(preset, str) else preset
    path = checkpoint_folder(preset, model_path)
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = resolve_load_dtype(dtype, path, preset)
    check_device_runs(dtype, device, str(path / "config.json"))
    from medtune.core_models.model_class import model_class_for

    architectures = read_json(path / "config.json").get("architectures") or []
    from medtune.core_models.convert import RELEASE_TEXT_CONFIGS, load_llava_med_release

    if any(a in RELEASE_TEXT_CONFIGS for a in architectures):
        return load_llava_med_release(
            preset, path, dtype=dtype, vision_tower=vision_tower, four_bit=four_bit, device=device
        )
    processor = None
    # an architecture without a rule, or no processor / chat template: say so first
    if preset.family == "vlm":
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
    files = check_files(path)  # a missing or truncated shard is named before anything loads
    check_shapes(path, files, model_cls)
    kwargs = {"dtype": dtype, "device_map": {"": device}}
    if four_bit is not None:
        from medtune.core_models.quantize import bnb_config

        # transformers quantises each frozen linear as it reads it (synchronously: one tensor in full precision)
        kwargs["quantization_config"] = bnb_config(four_bit, compute_dtype=dtype)
    try:
        with returned_to_the_system(), pread_slices(files) as slices:
            source = path
            if slices is not None:  # the same tensors, handed over as slices transformers reads one by one
                source, kwargs["state_dict"] = None, slices
                kwargs["config"] = transformers.AutoConfig.from_pretrained(path)
            model, info = model_cls.from_pretrained(source, output_loading_info=True, **kwargs)
        if source is None and (path / "generation_config.json").is_file():
            model.generation_config = transformers.GenerationConfig.from_pretrained(path)
    except (OSError, RuntimeError) as err:  # a shard safetensors cannot parse, a size transformers refuses
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {str(err).splitlines()[0]}") from None
    check_loading_info(path, files, info)
    quantized: list[str] = []
    if four_bit is not None:
        from medtune.core_models.quantize import keep_cpu_layout, quantized_names

        keep_cpu_layout(model)
        quantized = quantized_names(model)
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
        dtype=dtype,
        quantized=tuple(quantized),
        weight_files=files,
        renamed=renamed_keys(model, files),
        processor=processor,
    )


def renamed_keys(model: PreTrainedModel, files: dict[str, Path]) -> dict[str, str]:
    """Return model name -> checkpoint name for the tensors transformers renamed while loading (older layouts).

    Asks transformers' own conversion mapping (the one PEFT uses too), so the names are the ones it loaded.
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError:  # a transformers without conversion mappings renames nothing
        return {}
    renamings = [m for m in get_model_conversion_mapping(model) if isinstance(m, WeightRenaming)]
    state = model.state_dict()
    renamed = {}
    for key in files:
        new, _ = rename_source_key(key, renamings, [], model.base_model_prefix, state)
        if new != key:
            renamed[new] = key
    return renamed


def check_shapes(path: Path, files: dict[str, Path], model_cls: type[PreTrainedModel]) -> None:
    """Raise CheckpointError naming the file and tensor whose stored shape is not what config.json's model needs.

    Read from the safetensors headers against the model built on the meta device, so nothing is loaded yet.
    """
    from medtune.core_models.errors import CheckpointError
    from medtune.core_models.weights import safetensors_header

    meta = meta_from_config(model_cls, path)
    wanted = {name: tuple(t.shape) for name, t in meta.state_dict().items()}
    renamed = {stored: name for name, stored in renamed_keys(meta, files).items()}
    for file in sorted({f for f in files.values() if f.suffix == ".safetensors"}):
        for stored, entry in safetensors_header(file).items():
            name = renamed.get(stored, stored)
            if name in wanted and tuple(entry["shape"]) != wanted[name]:
                raise CheckpointError(
                    f"checkpoint {path} does not match its config.json: tensor {name} in {file} has shape "
                    f"{tuple(entry['shape'])}, the model needs {wanted[name]}; check that config.json belongs "
                    "to these weights"
                )


def check_loading_info(path: Path, files: dict[str, Path], info: dict) -> None:
    """Raise CheckpointError when transformers' loading report lists missing, unexpected or mis-shaped tensors.

    transformers only warns about these (and leaves a missing tensor randomly initialised), which would tune a
    model that is not the checkpoint.
    """
    from medtune.core_models.errors import CheckpointError

    index = next((path / n for n in ("model.safetensors.index.json",) if (path / n).is_file()), path)
    problems = []
    for name, found, wanted in sorted(info.get("mismatched_keys") or ()):
        where = files.get(name, index)
        problems.append(f"tensor {name} in {where} has shape {tuple(found)}, the model needs {tuple(wanted)}")
    for name in sorted(info.get("missing_keys") or ()):
        problems.append(f"tensor {name} is missing from {index}")
    for name in sorted(info.get("unexpected_keys") or ()):
        problems.append(f"tensor {name} in {files.get(name, index)} belongs to no part of the model")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(
            f"checkpoint {path} does not match its config.json: {problems[0]}{more}; check that the folder is "
            "the complete checkpoint its config describes"
        )


def load_image_processor(folder: Path):
    """Return the image processor saved in ``folder``, built by the class its preprocessor_config.json names.

    Some transformers 5.x releases (5.17, say) gate AutoImageProcessor itself on torchvision, while the named
    classes work without it; so the class is looked up directly (its PIL backend when torchvision is absent, as
    AutoImageProcessor picks in later releases), and AutoImageProcessor is the last resort.
    """
    file = Path(folder) / "preprocessor_config.json"
    name = read_json(file).get("image_processor_type", "") if file.is_file() else ""
    base = name.removesuffix("Fast").removesuffix("Pil")
    candidates = [f"{base}Pil"] if base and importlib.util.find_spec("torchvision") is None else []
    for candidate in [*candidates, base]:
        cls = getattr(transformers, candidate, None) if candidate else None
        if cls is not None:
            return cls.from_pretrained(folder)
    return AutoImageProcessor.from_pretrained(folder)


def full_precision_weights(built: Built, model: PreTrainedModel | None = None):
    """Return state-dict name -> checkpoint tensor (read when asked) for each NF4 weight of ``model``.

    ``model`` defaults to ``built.model`` and may be it wrapped for tuning (PEFT's base_model.model., base_layer).
    A weight whose checkpoint name cannot be found (a layout transformers renamed while loading) is left out.
    """
    from medtune.core_models.quantize import quantized_names
    from medtune.core_models.weights import LazyTensors

    model = built.model if model is None else model
    entries = {}
    for name in quantized_names(model):
        key = name.removeprefix("base_model.model.").replace(".base_layer", "") + ".weight"
        stored = built.renamed.get(key, key)
        if stored in built.weight_files:
            entries[f"{name}.weight"] = (built.weight_files[stored], stored)
    return LazyTensors(entries)


def meta_model(
    preset: str | Preset, model_path: str | Path | None = None, vision_tower=None
) -> PreTrainedModel:
    """Return the model ``load`` would build for this checkpoint, on the meta device (its config, no weights)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    path = checkpoint_folder(preset, model_path)
    from medtune.core_models.convert import is_llava_med_release, release_meta_model
    from medtune.core_models.model_class import model_class_for

    if is_llava_med_release(path):
        return release_meta_model(preset, path, vision_tower)
    return meta_from_config(model_class_for(preset), path)


def meta_from_config(model_cls, path: Path) -> PreTrainedModel:
    """Return ``model_cls`` built from ``path``'s config.json on the meta device (an Auto class or a model class)."""
    config = transformers.AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        if hasattr(model_cls, "_from_config"):
            return model_cls._from_config(config)
        return model_cls.from_config(config)
