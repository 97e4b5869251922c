"""Merge a run's adapter into its base and write a full Hugging Face checkpoint."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from medtune.core_models import Built, load
from medtune.tuning.adapter import load_adapter, read_manifest
from medtune.tuning.apply import apply_paradigm
from medtune.tuning.methods import MethodOptions
from medtune.tuning.paradigm import Paradigm
from medtune.tuning.errors import UsageError


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA layer into its base linear (PEFT's merge) and unwrap it; return how many were merged."""
    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(
                model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer()
            )
            merged += 1
    return merged


def merged_model(adapter: Path, model_path: str | None = None) -> Built:
    """Return the adapter's base (from ``model_path`` or the manifest) with the adapter merged into its weights."""
    manifest = read_manifest(adapter)
    if manifest["method"] == "prefix":
        raise UsageError(
            f"{adapter} is a prefix-tuning adapter: its virtual tokens are extra inputs, not weights, so it "
            "cannot be merged; ship the adapter folder and load it with medtune.tuning.load_adapter"
        )
    source = model_path or manifest.get("base_source")
    built = load(manifest["preset"], None if source in (None, "random init") else source)
    dtype = next(built.model.parameters()).dtype
    details = manifest.get("method_details") or {}
    options = MethodOptions(lora_rank=details.get("rank"), lora_alpha=details.get("alpha"))
    paradigm = Paradigm.parse(manifest["paradigm"], manifest["family"])
    built.model = apply_paradigm(built.model, manifest["family"], manifest["method"], paradigm, options).model
    load_adapter(built.model, adapter)
    with torch.no_grad():
        merge_lora(built.model)
    # LN-tuned norms train in fp32; the checkpoint is written in the base's own precision.
    built.model.to(dtype)
    for p in built.model.parameters():
        p.requires_grad_(False)
    return built


def export_merged(adapter: Path, out: Path, model_path: str | None = None) -> Path:
    """Write the merged checkpoint (weights, tokenizer, image processor) to ``out`` via a temporary folder."""
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not empty; choose a new folder (nothing was written)")
    built = merged_model(adapter, model_path)
    if read_manifest(adapter).get("trained_4bit"):
        dtype = next(built.model.parameters()).dtype
        print(
            f"{adapter} was tuned on 4-bit (NF4) frozen weights; merged into the full-precision base and "
            f"saved in its precision ({str(dtype).removeprefix('torch.')})"
        )
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    built.model.save_pretrained(tmp)
    for part in (built.tokenizer, built.image_processor):
        if part is not None:
            part.save_pretrained(tmp)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out
