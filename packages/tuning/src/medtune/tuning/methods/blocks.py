"""Select the parameters of whole sub-blocks (attention blocks, MLPs) by their module class, inside chosen groups."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from medtune.core_models import group_of


def block_parameter_names(
    model: nn.Module, family: str, groups: tuple[str, ...], is_block: Callable[[nn.Module], bool]
) -> frozenset[str]:
    """Return the names of every parameter inside the outermost modules ``is_block`` accepts, within ``groups``."""
    names: set[str] = set()
    taken: list[str] = []
    for module_name, module in model.named_modules():
        if not module_name or any(module_name.startswith(t + ".") for t in taken) or not is_block(module):
            continue
        if group_of(module_name, family) not in groups:
            continue
        taken.append(module_name)
        names.update(f"{module_name}.{p}" for p, _ in module.named_parameters())
    return frozenset(names)
