"""Adapters: only the tuned tensors, in PEFT's own layout where one exists, plus a manifest naming their base.

An adapter folder holds ``manifest.json`` (preset, method and its whole config, paradigm, base fingerprint) and
either PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` (loadable with `PeftModel.from_pretrained`,
see ``methods/peft_layout.py``) or, for an adapter PEFT cannot express (the manifest says why), medtune's
``adapter.safetensors`` under the model's own parameter names. Adapters written before the PEFT layout (always
``adapter.safetensors``) load the same way.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medtune.data.run_files import ADAPTER
from medtune.tuning.errors import AdapterError, UsageError
from medtune.tuning.run_dir import check_free_space, replace_folder
from medtune.tuning.stored_tensors import Stored, sampled

WEIGHTS = "adapter.safetensors"  # medtune's own layout
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
MANIFEST = "manifest.json"


def medtune_version() -> str:
    """Return the installed medtune-tuning version (what manifests and model cards record)."""
    try:
        return version("medtune-tuning")
    except PackageNotFoundError:
        return "unknown"


FINGERPRINT_SAMPLES = 64  # values per tensor the base fingerprint hashes


def strided_sample(flat: torch.Tensor) -> torch.Tensor:
    """Return the fingerprint's sample of a flat tensor: FINGERPRINT_SAMPLES values at an even stride."""
    return flat[:: max(1, flat.numel() // FINGERPRINT_SAMPLES)][:FINGERPRINT_SAMPLES]


def fingerprint_of(entries: Iterable[tuple[str, tuple[int, ...], torch.Tensor]]) -> str:
    """Return the short hash of (name, shape, strided sample) entries, taken in the order given."""
    digest = hashlib.sha256()
    for name, shape, sample in entries:
        digest.update(f"{name}:{tuple(shape)}".encode())
        sample = sample.detach().cpu()
        digest.update((sample.float() if sample.is_floating_point() else sample).numpy().tobytes())
    return digest.hexdigest()[:16]


def base_fingerprint(
    model: nn.Module,
    exclude: frozenset[str] | set[str] = frozenset(),
    full_precision: Mapping[str, torch.Tensor | Stored] | None = None,
) -> str:
    """Return a short hash of the frozen base: every tensor's name, shape and a strided sample of values.

    ``full_precision`` maps NF4-quantised weights to their checkpoint tensors, so a 4-bit model hashes like the
    full-precision base its adapter loads into (their quantisation state is left out). A tensor given as its
    place in a safetensors file (``Stored``) has only its sampled values read.
    """
    full_precision = full_precision or {}
    entries = []
    for name, tensor in sorted(model.state_dict().items()):
        if name in exclude or any(name.startswith(f"{q}.") for q in full_precision):
            continue
        tensor = full_precision.get(name, tensor)
        if isinstance(tensor, Stored):
            entries.append((name, tensor.shape, sampled(tensor, tensor.dtype, FINGERPRINT_SAMPLES)))
            continue
        if tensor.device.type == "meta":
            continue
        entries.append((name, tuple(tensor.shape), strided_sample(tensor.detach().reshape(-1))))
    return fingerprint_of(entries)


def tuned_state(model: nn.Module, names: frozenset[str] | set[str]) -> dict[str, torch.Tensor]:
    """Return ``names``' parameters as full, contiguous CPU tensors.

    FSDP2-sharded parameters (DTensors) are gathered with ``full_tensor()``, a collective: under FSDP call
    this on every process. Plain tensors are only detached and moved, so it costs nothing without FSDP.
    """
    from torch.distributed.tensor import DTensor

    state = {}
    for name, param in model.named_parameters():
        if name in names:
            tensor = param.detach()
            if isinstance(tensor, DTensor):
                tensor = tensor.full_tensor()
            state[name] = tensor.contiguous().cpu()
    return state


def peft_layout(model: nn.Module, state: dict[str, torch.Tensor], manifest: dict):
    """Return (PeftConfig, {PEFT key: tensor}) of the adapter; raises NotRepresentable saying why there is none."""
    from medtune.core_models import group_of
    from medtune.tuning.methods import get_method
    from medtune.tuning.methods.peft_layout import ROOT, NotRepresentable, whole_module_cover
    from medtune.tuning.paradigm import Paradigm

    method, family = get_method(manifest["method"]), manifest["family"]
    if method.peft is None:
        raise NotRepresentable(f"method {method.name!r} has no PEFT layout")
    peft_groups = Paradigm.parse(manifest["paradigm"], family).groups_in("PEFT")
    tuned = {n: t for n, t in state.items() if group_of(n, family) in peft_groups}
    whole = frozenset(state) - set(tuned)  # the T groups' tensors: PEFT's modules_to_save
    modules_to_save = whole_module_cover(model, whole, outermost=True) if whole else []
    config = method.config_from_manifest(manifest)
    peft_config = method.peft.config(model, family, frozenset(tuned), config, modules_to_save)
    source = manifest.get("base_source")
    peft_config.base_model_name_or_path = source if source and Path(source).exists() else None
    peft_config.inference_mode = True
    tensors = method.peft.to_peft(model, family, tuned, config)
    tensors.update({ROOT + name: t for name, t in module_states(model, modules_to_save, state).items()})
    return peft_config, tensors


def module_states(
    model: nn.Module, modules: list[str], state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Return each module's whole state dict, as PEFT saves a modules_to_save copy: tied aliases and buffers too.

    Parameters come from ``state`` (gathered, trained values) under whichever name ``named_parameters`` gave a
    tied tensor; buffers come from the model.
    """
    canonical = {id(p): name for name, p in model.named_parameters()}
    out = {}
    for module_name in modules:
        for key, value in model.get_submodule(module_name).state_dict(keep_vars=True).items():
            name, full = canonical.get(id(value)), f"{module_name}.{key}"
            tensor = state[name] if name in state else value.detach().contiguous().cpu()
            out[full] = tensor if name == full else tensor.clone()  # safetensors stores no shared memory
    return out


def save_adapter(
    path: Path,
    model: nn.Module,
    names: frozenset[str],
    manifest: dict,
    *,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``names``' tensors and the manifest to ``path`` via a temporary folder renamed into place.

    The tensors go in PEFT's layout where the method and paradigm have an exact PEFT equivalent, otherwise in
    medtune's (the manifest's ``peft_unavailable`` says why). Under FSDP pass ``state=tuned_state(model, names)``
    gathered on every process; only one process saves.
    """
    from medtune.tuning.methods.peft_layout import NotRepresentable

    state = tuned_state(model, names) if state is None else state
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    check_free_space(tmp.parent, sum(t.numel() * t.element_size() for t in state.values()), "adapter")
    manifest = {
        **manifest,
        "tensors": len(state),
        "params": sum(t.numel() for t in state.values()),
        "medtune_version": medtune_version(),
    }
    try:
        peft_config, tensors = peft_layout(model, state, manifest)
    except NotRepresentable as reason:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        manifest.update(format="medtune", peft_unavailable=str(reason))
    else:
        peft_config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
        manifest.update(format="peft", peft_type=str(peft_config.peft_type.value))
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return replace_folder(tmp, path)  # also clears a .old that a kill mid-replace left behind


def find_adapter(path: Path) -> Path:
    """Return the adapter folder of a run directory, or the path itself when it is one."""
    for candidate in (path, path / ADAPTER):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise UsageError(f"{path} is neither a run directory with adapter/ nor an adapter folder (no {MANIFEST})")


def read_manifest(path: Path) -> dict:
    """Return an adapter folder's manifest; a missing or unreadable one is an AdapterError naming the file."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise AdapterError(f"{path} is not a medtune adapter (no {MANIFEST}); pass a run's adapter/ folder")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterError(
            f"{file} is not valid JSON ({err}); the adapter is damaged, copy it again"
        ) from None
    missing = [key for key in ("preset", "family", "method", "paradigm") if key not in manifest]
    if missing:
        raise AdapterError(f"{file} lacks {', '.join(missing)}; it was not written by medtune train")
    return manifest


def read_adapter_state(path: str | Path, manifest: dict | None = None) -> dict[str, torch.Tensor]:
    """Return the adapter's tensors under the model's own parameter names, from either layout."""
    from medtune.tuning.methods import get_method

    path = Path(path)
    manifest = read_manifest(path) if manifest is None else manifest
    peft = (path / PEFT_WEIGHTS).is_file()
    file = path / (PEFT_WEIGHTS if peft else WEIGHTS)
    if not file.is_file():
        raise AdapterError(f"adapter {path} has neither {PEFT_WEIGHTS} nor {WEIGHTS}; copy the whole folder")
    try:
        state = load_file(str(file))
    except SafetensorError as err:
        raise AdapterError(
            f"{file} is not a readable safetensors file ({err}); it is damaged or incomplete: copy the "
            "adapter again, or retrain"
        ) from None
    if not peft:
        return state
    return get_method(manifest["method"]).peft.from_peft(manifest["family"], state)


def load_adapter(model: nn.Module, path: str | Path, *, check_base: bool = True) -> dict:
    """Copy an adapter's tensors into ``model`` in place and return its manifest.

    Refuses (AdapterError) an adapter made for another base (fingerprint mismatch), or one whose tensors the model
    lacks or holds with other shapes, naming them: the model must be the manifest's base with the same method
    and config applied (``rebuild_from_manifest`` makes one).
    """
    path = Path(path)
    manifest = read_manifest(path)
    state = read_adapter_state(path, manifest)
    params = dict(model.named_parameters())
    # PEFT's copies of whole modules also hold their tied aliases and buffers, which follow their parameters.
    others = set(model.state_dict()) - set(params)
    state = {name: tensor for name, tensor in state.items() if name not in others}
    made_for = f"it was made for preset {manifest['preset']!r} with method {manifest['method']!r}"
    missing = sorted(set(state) - set(params))
    if missing:
        raise AdapterError(
            f"adapter {path} holds {len(missing)} tensor(s) this model lacks (first: {missing[0]}); {made_for} "
            f"(config {json.dumps(manifest.get('method_config', manifest.get('method_details')))})"
        )
    wrong = sorted(n for n in state if state[n].shape != params[n].shape)
    if wrong:
        first = wrong[0]
        raise AdapterError(
            f"adapter {path} and this model disagree on the shape of {len(wrong)} tensor(s) (first: {first} is "
            f"{tuple(state[first].shape)} in the adapter, {tuple(params[first].shape)} in the model); {made_for}: "
            "rebuild the model from the manifest (medtune.tuning.rebuild_from_manifest)"
        )
    if check_base:
        found = base_fingerprint(model, exclude=set(state))
        if found != manifest.get("base_fingerprint"):
            raise AdapterError(
                f"adapter {path} was made for another base model (fingerprint {manifest.get('base_fingerprint')}, "
                f"this model's is {found}); load the base it was tuned on (preset {manifest.get('preset')!r}, "
                f"source {manifest.get('base_source')!r})"
            )
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].dtype))
    return manifest
