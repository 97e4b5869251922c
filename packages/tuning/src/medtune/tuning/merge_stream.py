"""Merge an adapter into its base checkpoint tensor by tensor: the merged model never exists in memory.

The base is built on the meta device (its config, no weights) to learn what ``save_pretrained`` would write for
the merged model: the tensor names (transformers' load-time renames reverted, tied copies left out), their order
and their shards. Each output tensor is then read from the base's safetensors, replaced by the adapter's tuned
tensor or merged with its LoRA factors, cast to the base's dtype and written into its shard, one at a time; the
peak is about one tensor, not the model. ``plan_merge`` raises NotStreamable (saying why) where this cannot be
done exactly; the export then merges in memory as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medtune.core_models import Built, get_preset
from medtune.core_models.errors import CheckpointError
from medtune.core_models.weights import check_files
from medtune.tuning.adapter import (
    FINGERPRINT_SAMPLES,
    PEFT_WEIGHTS,
    WEIGHTS,
    fingerprint_of,
    strided_sample,
)
from medtune.tuning.stored_tensors import (
    NotStreamable,
    Stored,
    read_stored,
    sampled,
    stored_entries,
    write_safetensors,
)


@dataclass
class MergePlan:
    """What a streamed merge writes, and where each value comes from (no tensor is read to make it)."""

    # The base on the meta device with its tokenizer and processors: what the export writes beside the weights.
    built: Built
    dtype: torch.dtype  # the base's: every floating tensor is written in it
    saved: dict[str, str]  # saved name -> base model tensor name, in save_pretrained's order
    shape: dict[str, tuple[int, ...]]  # base model tensor name -> shape
    held: dict[str, torch.dtype]  # base model tensor name -> the dtype the loaded base holds it in
    stored: dict[str, Stored]  # base model tensor name -> its checkpoint tensor
    buffers: dict[str, torch.Tensor]  # base model buffer name -> its value, where the checkpoint has none
    replaced: dict[str, Stored]  # base model tensor name -> the adapter tensor that replaces it
    lora: dict[str, tuple[Stored, Stored, float]]  # base linear weight name -> (lora_A, lora_B, scaling)
    fingerprinted: dict[
        str, str
    ]  # tuned model name -> base name, for each tensor the base fingerprint hashes

    def out_dtype(self, name: str) -> torch.dtype:
        """Return the dtype base tensor ``name`` is written in (integer buffers keep theirs)."""
        held = self.held[name]
        return self.dtype if held.is_floating_point else held


def meta_base(preset, path: Path, dtype: torch.dtype) -> nn.Module:
    """Return the checkpoint's model on the meta device in ``dtype``, tied as loaded; buffers hold their values."""
    import transformers
    from accelerate import init_empty_weights
    from transformers.initialization import no_init_weights

    from medtune.core_models.model_class import model_class_for

    config = transformers.AutoConfig.from_pretrained(path)
    with no_init_weights(), init_empty_weights(include_buffers=False):
        model = model_class_for(preset)._from_config(config, dtype=dtype)
    model.tie_weights()
    return model


def checkpoint_names(model: nn.Module, files: dict[str, Path]) -> dict[str, str]:
    """Return model tensor name -> checkpoint name, renaming as transformers does when it loads the checkpoint.

    Records the renames used on ``model`` as loading does, so that reverting them gives save_pretrained's names.
    Raises NotStreamable for a tensor transformers converts (splits, concatenates) rather than renames.
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError:  # a transformers without conversion mappings loads and saves every name as it is
        return {name: name for name in files}
    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if not isinstance(c, WeightRenaming)]
    state = model.state_dict()
    names = {}
    for key in files:
        name, converted = rename_source_key(key, renamings, converters, model.base_model_prefix, state)
        if converted is not None:
            raise NotStreamable(f"transformers converts checkpoint tensor {key} as it loads it")
        if name not in state:
            raise NotStreamable(f"checkpoint tensor {key} belongs to no part of the model")
        names[name] = key
    model._weight_conversions = [c for c in conversions if c.was_used()]
    return names


def saved_names(model: nn.Module) -> dict[str, str]:
    """Return saved name -> model tensor name for what save_pretrained writes of ``model``, in its order."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
        from transformers.modeling_utils import remove_tied_weights_from_state_dict
    except ImportError as err:
        raise NotStreamable(f"this transformers lacks the save-time renaming ({err})") from None
    state = model.state_dict()
    by_id = {id(tensor): name for name, tensor in state.items()}
    reverted = revert_weight_conversion(model, remove_tied_weights_from_state_dict(dict(state), model))
    saved = {}
    for name, tensor in reverted.items():
        tensor = tensor[0] if isinstance(tensor, list) else tensor
        if id(tensor) not in by_id:
            raise NotStreamable(f"save_pretrained writes {name} as a computed tensor")
        saved[name] = by_id[id(tensor)]
    return saved


def adapter_entries(adapter: Path, manifest: dict) -> dict[str, Stored]:
    """Return tuned model tensor name -> the adapter tensor (either layout), located without reading any."""
    from medtune.tuning.methods import get_method

    peft = (adapter / PEFT_WEIGHTS).is_file()
    file = adapter / (PEFT_WEIGHTS if peft else WEIGHTS)
    if not file.is_file():
        raise NotStreamable(f"{adapter} has no adapter weights")
    try:
        entries = stored_entries(file)
    except CheckpointError as err:  # the in-memory path says it as an adapter error
        raise NotStreamable(str(err)) from None
    if not peft:
        return entries
    # The layout renames keys only, so meta stand-ins (no data) carry each key through it.
    stand_ins = {key: torch.empty(e.shape, dtype=e.dtype, device="meta") for key, e in entries.items()}
    key_of = {id(t): key for key, t in stand_ins.items()}
    renamed = get_method(manifest["method"]).peft.from_peft(manifest["family"], stand_ins)
    return {name: entries[key_of[id(t)]] for name, t in renamed.items()}


def tuned_model(model: nn.Module, adapter: Path, manifest: dict):
    """Return ``model`` with the manifest's method and paradigm applied as stored (rebuild.base_for_manifest's)."""
    from medtune.tuning.apply import apply_paradigm
    from medtune.tuning.methods import get_method
    from medtune.tuning.paradigm import Paradigm

    method = get_method(manifest["method"])
    try:
        config = method.config_from_manifest(manifest)
    except (TypeError, ValueError) as err:
        raise NotStreamable(f"unreadable method config ({err})") from None
    in_peft_layout = (adapter / PEFT_WEIGHTS).is_file()
    load_options = method.peft.load_options if method.peft is not None else None
    options = load_options(config) if in_peft_layout and load_options is not None else config.options()
    paradigm = Paradigm.parse(manifest["paradigm"], manifest["family"])
    return apply_paradigm(model, manifest["family"], method.name, paradigm, options).model


def base_folder(manifest: dict, model_path: str | Path | None) -> tuple:
    """Return (preset, the base checkpoint folder) of an adapter; NotStreamable where the base cannot stream."""
    from medtune.core_models.convert import is_llava_med_release
    from medtune.tuning.methods import get_method
    from medtune.tuning.rebuild import base_source

    try:
        preset = get_preset(manifest["preset"])
    except ValueError:
        raise NotStreamable(f"medtune knows no preset {manifest['preset']!r}") from None
    if preset.family != manifest["family"]:
        raise NotStreamable(f"preset {preset.name!r} is not of family {manifest['family']!r}")
    method = get_method(manifest["method"])
    if method.merge is not None and method.name != "lora":
        raise NotStreamable(f"{method.name} adapters merge in their own way")
    source = base_source(manifest, model_path)
    folder = Path(source).expanduser() if source is not None else preset.default_weights
    if folder is None or not (folder / "config.json").is_file():
        raise NotStreamable(f"no checkpoint folder with a config.json at {folder}")
    if is_llava_med_release(folder):
        raise NotStreamable(
            "the base is an original LLaVA-Med release, whose conversion pads embedding rows and may read its "
            "vision tower from another folder"
        )
    return preset, folder


def base_sources(base: nn.Module, folder: Path) -> tuple[dict[str, Stored], dict[str, torch.Tensor]]:
    """Return (model tensor name -> its checkpoint tensor, buffer name -> value where the checkpoint has none).

    A tied tensor's every name maps to whichever of them the checkpoint holds. Raises CheckpointError for a
    missing or truncated shard, NotStreamable for a tensor the checkpoint lacks or holds in another shape.
    """
    files = check_files(folder)
    if any(file.suffix != ".safetensors" for file in files.values()):
        raise NotStreamable("the base's weights are not safetensors")
    names = checkpoint_names(base, files)
    entries: dict[str, Stored] = {}
    for file in sorted(set(files.values())):
        entries.update(stored_entries(file))
    variables = base.state_dict(keep_vars=True)
    stored, buffers = {}, {}
    for name, value in variables.items():
        if name in names:
            stored[name] = entries[names[name]]
            if stored[name].shape != tuple(value.shape):
                raise NotStreamable(f"checkpoint tensor {names[name]} has shape {stored[name].shape}")
        elif value.device.type != "meta":
            buffers[name] = value.detach()
    for group in tied_names(base).values():
        found = next((stored[n] for n in group if n in stored), None)
        for name in group:
            if name not in stored and name not in buffers:
                if found is None:
                    raise NotStreamable(f"tensor {name} is not in the checkpoint")
                stored[name] = found
    return stored, buffers


def tied_names(model: nn.Module) -> dict[int, list[str]]:
    """Return, per tensor of ``model``'s state dict, every name it has there (several for a tied one)."""
    names: dict[int, list[str]] = {}
    for name, value in model.state_dict(keep_vars=True).items():
        names.setdefault(id(value), []).append(name)
    return names


def checked_adapter(tuned: nn.Module, adapter: Path, manifest: dict) -> dict[str, Stored]:
    """Return tuned model parameter name -> adapter tensor, refused (AdapterError) as load_adapter refuses it."""
    from medtune.tuning.errors import AdapterError

    params = dict(tuned.named_parameters())
    # PEFT's copies of whole modules also hold their tied aliases and buffers, which follow their parameters.
    others = set(tuned.state_dict()) - set(params)
    state = {n: e for n, e in adapter_entries(adapter, manifest).items() if n not in others}
    made_for = f"it was made for preset {manifest['preset']!r} with method {manifest['method']!r}"
    missing = sorted(set(state) - set(params))
    if missing:
        raise AdapterError(
            f"adapter {adapter} holds {len(missing)} tensor(s) this model lacks (first: {missing[0]}); {made_for}"
        )
    wrong = sorted(n for n in state if state[n].shape != tuple(params[n].shape))
    if wrong:
        first = wrong[0]
        raise AdapterError(
            f"adapter {adapter} and this model disagree on the shape of {len(wrong)} tensor(s) (first: {first} is "
            f"{state[first].shape} in the adapter, {tuple(params[first].shape)} in the model); {made_for}"
        )
    return state


def lora_layers(tuned: nn.Module, state: dict[str, Stored]) -> dict[str, tuple[Stored, Stored, float]]:
    """Return base linear weight name -> (lora_A, lora_B, scaling) for every LoRA layer of ``tuned``."""
    from peft.tuners.lora import LoraLayer

    lora = {}
    for name, module in tuned.named_modules():
        if isinstance(module, LoraLayer):
            a, b = (f"{name}.lora_{factor}.default.weight" for factor in "AB")
            extras = (
                module.use_dora.get("default") or module.lora_bias.get("default") or module.fan_in_fan_out
            )
            if (
                extras
                or not isinstance(module.get_base_layer(), nn.Linear)
                or a not in state
                or b not in state
            ):
                raise NotStreamable(f"LoRA layer {name} is not a plain linear LoRA with both factors saved")
            lora[f"{name}.weight"] = (state[a], state[b], float(module.scaling["default"]))
    return lora


def plan_merge(adapter: Path, manifest: dict, model_path: str | Path | None = None) -> MergePlan:
    """Return how to write the merged checkpoint of ``adapter`` over its base, read from file headers only.

    Raises CheckpointError for a missing or truncated shard, AdapterError where load_adapter would refuse the
    adapter's tensors, and NotStreamable where the merge cannot be streamed exactly.
    """
    from medtune.core_models.build import checkpoint_dtype

    preset, folder = base_folder(manifest, model_path)
    dtype = checkpoint_dtype(folder, preset)
    base = meta_base(preset, folder, dtype)
    stored, buffers = base_sources(base, folder)
    shape = {name: tuple(value.shape) for name, value in base.state_dict(keep_vars=True).items()}
    held = {name: value.dtype for name, value in base.state_dict(keep_vars=True).items()}

    # The tuned tensors, under the names of the model the method builds (on the meta device as well).
    tuned = tuned_model(meta_base(preset, folder, dtype), adapter, manifest)
    state = checked_adapter(tuned, adapter, manifest)
    lora = lora_layers(tuned, state)
    factors = {f"{n.removesuffix('.weight')}.lora_{f}.default.weight" for n in lora for f in "AB"}
    base_name = {}  # tuned model name -> base model name (a LoRA layer's base_layer is the plain linear)
    for name in tuned.state_dict():
        head, sep, tail = name.partition(".base_layer.")
        base_name[name] = f"{head}.{tail}" if sep and f"{head}.weight" in lora else name
    aliases = {name: group for group in tied_names(base).values() for name in group}
    tuned_base = {}
    for name, entry in state.items():
        if name not in factors:
            if base_name[name] not in shape:
                raise NotStreamable(f"adapter tensor {name} replaces no base tensor")
            tuned_base.update(dict.fromkeys(aliases[base_name[name]], entry))
    fingerprinted = {n: base_name[n] for n in sorted(base_name) if n not in state}
    if any(name not in shape for name in fingerprinted.values()):
        raise NotStreamable("the tuned model holds tensors the adapter does not")
    built = base_built(preset, folder, base, dtype)
    return MergePlan(
        built, dtype, saved_names(base), shape, held, stored, buffers, tuned_base, lora, fingerprinted
    )


def base_built(preset, folder: Path, model: nn.Module, dtype: torch.dtype) -> Built:
    """Return ``model`` (weightless) with the checkpoint's tokenizer and processors, as core_models.load gives."""
    import transformers
    from transformers import AutoTokenizer

    from medtune.core_models.build import load_image_processor

    processor = None
    if (folder / "generation_config.json").is_file():
        model.generation_config = transformers.GenerationConfig.from_pretrained(folder)
    if preset.family == "vlm":
        from medtune.core_models.vlm import with_decoder_layer
        from medtune.core_models.vlm_processor import load_processor

        processor = load_processor(folder)
        tokenizer, image_processor = processor.tokenizer, processor.image_processor
        preset = with_decoder_layer(preset, model)
    else:
        tokenizer, image_processor = AutoTokenizer.from_pretrained(folder), load_image_processor(folder)
    return Built(model, tokenizer, image_processor, preset, str(folder), dtype=dtype, processor=processor)


def base_fingerprint(plan: MergePlan) -> str:
    """Return the base fingerprint load_adapter computes on the loaded base, from 64 values read per tensor."""
    return fingerprint_of(
        (
            name,
            plan.shape[base],
            strided_sample(plan.buffers[base].reshape(-1))
            if base in plan.buffers
            else sampled(plan.stored[base], plan.held[base], FINGERPRINT_SAMPLES),
        )
        for name, base in plan.fingerprinted.items()
    )


def merged_tensor(plan: MergePlan, saved_name: str) -> torch.Tensor:
    """Return one tensor of the merged checkpoint, as the in-memory merge writes it under ``saved_name``."""
    name = plan.saved[saved_name]
    dtype = plan.out_dtype(name)
    if name in plan.replaced:
        return read_stored(plan.replaced[name]).to(dtype)
    if name in plan.buffers:
        return plan.buffers[name].to(dtype)
    base = read_stored(plan.stored[name]).to(plan.held[name])
    if name not in plan.lora:
        return base.to(dtype)
    factor_a, factor_b, scaling = plan.lora[name]
    # W + scaling * B @ A in fp32 from the adapter's own fp32 factors, rounded once to the base's dtype.
    delta = (read_stored(factor_b).float() @ read_stored(factor_a).float()) * scaling
    return delta.add_(base).to(dtype)


def write_merged(plan: MergePlan, folder: Path, max_shard_size: str | int) -> tuple[int, int]:
    """Write the merged weights into ``folder`` as save_pretrained shards them; return (tensors, shard files)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    spec = {s: (plan.out_dtype(n), plan.shape[n]) for s, n in plan.saved.items()}
    stand_ins = {s: torch.empty(shape, dtype=dtype, device="meta") for s, (dtype, shape) in spec.items()}
    split = split_torch_state_dict_into_shards(
        stand_ins, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )
    folder.mkdir(parents=True, exist_ok=True)
    for shard, names in split.filename_to_tensors.items():
        write_safetensors(folder / shard, names, spec, lambda s: merged_tensor(plan, s))
    if split.is_sharded:
        index = {
            "metadata": {"total_parameters": plan.built.model.num_parameters(), **split.metadata},
            "weight_map": split.tensor_to_filename,
        }
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        (folder / "model.safetensors.index.json").write_text(text)
    return len(spec), len(split.filename_to_tensors)


def write_config(plan: MergePlan, folder: Path) -> None:
    """Write config.json as save_pretrained writes it for the merged model (its class, the base's dtype)."""
    model = plan.built.model
    model.config.dtype = str(plan.dtype).removeprefix("torch.")
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
