"""Adapters: only the tuned tensors (safetensors) plus a manifest naming the base they belong to."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medtune.tuning.run_dir import check_free_space, replace_folder

WEIGHTS = "adapter.safetensors"
MANIFEST = "manifest.json"


def base_fingerprint(model: nn.Module, exclude: frozenset[str] | set[str] = frozenset()) -> str:
    """Return a short hash of the frozen base: every tensor's name, shape and a strided sample of values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name in exclude or ".lora_" in name or tensor.device.type == "meta":
            continue
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 64)][:64]
        digest.update(
            sample.float().cpu().numpy().tobytes()
            if sample.is_floating_point()
            else sample.cpu().numpy().tobytes()
        )
    return digest.hexdigest()[:16]


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


def save_adapter(
    path: Path,
    model: nn.Module,
    names: frozenset[str],
    manifest: dict,
    *,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``names``' tensors and the manifest to ``path`` via a temporary folder renamed into place.

    Under FSDP pass ``state=tuned_state(model, names)`` gathered on every process; only one process saves.
    """
    state = tuned_state(model, names) if state is None else state
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    check_free_space(tmp.parent, sum(t.numel() * t.element_size() for t in state.values()), "adapter")
    save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
    manifest = {**manifest, "tensors": len(state), "params": sum(t.numel() for t in state.values())}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return replace_folder(tmp, path)  # also clears a .old that a kill mid-replace left behind


def read_manifest(path: Path) -> dict:
    """Return an adapter folder's manifest."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} is not a medtune adapter (no {MANIFEST}); pass a run's adapter/ folder"
        )
    return json.loads(file.read_text())


def load_adapter(model: nn.Module, path: str | Path, *, check_base: bool = True) -> dict:
    """Copy an adapter's tensors into ``model`` in place and return its manifest.

    Refuses an adapter made for another base (fingerprint mismatch) or one naming tensors the model lacks.
    """
    path = Path(path)
    manifest = read_manifest(path)
    state = load_file(str(path / WEIGHTS))
    params = dict(model.named_parameters())
    missing = sorted(set(state) - set(params))
    if missing:
        raise ValueError(
            f"adapter {path} holds {len(missing)} tensor(s) this model lacks (first: {missing[0]}); it was made for "
            f"preset {manifest.get('preset')!r} with method {manifest.get('method')!r}"
        )
    if check_base:
        found = base_fingerprint(model, exclude=set(state))
        if found != manifest.get("base_fingerprint"):
            raise ValueError(
                f"adapter {path} was made for another base model (fingerprint {manifest.get('base_fingerprint')}, "
                f"this model's is {found}); load the base it was tuned on (preset {manifest.get('preset')!r}, "
                f"source {manifest.get('base_source')!r})"
            )
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].dtype))
    return manifest
