"""LN-tuning: train only the LayerNorm / RMSNorm scales and shifts inside the PEFT groups."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medtune.core_models import group_of
from medtune.tuning.methods.base import Method, MethodConfig, MethodOptions, Selection, register_method
from medtune.tuning.methods.peft_layout import MODULE_COPIES


@dataclass(frozen=True)
class LnConfig(MethodConfig):
    """LN-tuning's one setting: the tuned norms stay fp32 whatever the base's precision (DESIGN.md)."""

    fp32_norms: bool = True


def is_norm(module: nn.Module) -> bool:
    """True for LayerNorm and for the RMSNorm classes of LLaMA/Mistral/Gemma-style models."""
    return isinstance(module, nn.LayerNorm | nn.RMSNorm) or type(module).__name__.endswith(
        ("RMSNorm", "LayerNorm")
    )


def select_norms(model: nn.Module, family: str, groups: tuple[str, ...], options: MethodOptions) -> Selection:
    """Return the names of every norm weight and bias inside ``groups``."""
    names = set()
    for module_name, module in model.named_modules():
        if not is_norm(module):
            continue
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}"
            if group_of(full, family) in groups:
                names.add(full)
    return Selection(model, frozenset(names), LnConfig())


def keep_norms_fp32(model: nn.Module, names: frozenset[str], config: MethodConfig) -> None:
    """Cast tuned norm tensors to fp32: a bf16 gamma near 1.0 cannot absorb 2e-5 updates."""
    if not getattr(config, "fp32_norms", True):
        return
    for module_name, module in model.named_modules():
        if not is_norm(module):
            continue
        for param_name, param in module.named_parameters(recurse=False):
            if f"{module_name}.{param_name}" in names and param.dtype != torch.float32:
                param.data = param.data.float()


LN = register_method(
    Method(
        name="ln",
        display="LayerNorm",
        kind="intrinsic",
        select=select_norms,
        description="LayerNorm/RMSNorm gamma and beta only, kept in fp32",
        config_type=LnConfig,
        after_apply=keep_norms_fp32,
        peft=MODULE_COPIES,
    )
)
