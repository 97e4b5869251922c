"""LN-tuning: train only the LayerNorm / RMSNorm scales and shifts inside the PEFT groups."""

from __future__ import annotations

from torch import nn

from medtune.core_models import group_of
from medtune.tuning.methods.base import Method, MethodOptions, Selection, register_method


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
    return Selection(model, frozenset(names))


LN = register_method(
    Method(
        name="ln",
        display="LayerNorm",
        kind="intrinsic",
        select=select_norms,
        description="LayerNorm/RMSNorm gamma and beta only, kept in fp32",
    )
)
