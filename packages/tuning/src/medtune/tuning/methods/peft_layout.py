"""Adapters in PEFT's own `save_pretrained` layout: what each method's tensors are called there.

A PEFT adapter folder is ``adapter_config.json`` (a PeftConfig) plus ``adapter_model.safetensors`` whose keys are
the wrapped model's parameter names with the adapter name taken out, under ``base_model.model.``. medtune writes
that layout directly from its own tensors (renaming, never re-training), so `PeftModel.from_pretrained(base, dir)`
rebuilds the same model without medtune. Whole groups a paradigm trains (T) are PEFT's ``modules_to_save``: PEFT
keeps a trained copy of each such module and saves it under the module's own parameter names.

Methods that train existing tensors (ln, attention, ffn, full) use PEFT's LN_TUNING layout: its layer keeps a
trained copy of whatever module it wraps (PEFT warns that a non-norm module is "unsupported" yet handles it), so
each module whose tensors are all tuned is a target. LoRA and prefix tuning have their own layouts
(``lora.py``, ``prefix.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig
    from torch import nn

    from medtune.tuning.methods.base import MethodConfig, MethodOptions

ROOT = "base_model.model."  # what PeftModel puts before the wrapped model's own names
LN_TUNING_MARK = ".ln_tuning_layers."


class NotRepresentable(Exception):
    """This adapter has no exact PEFT equivalent; the message says why (it is written in medtune's layout)."""


@dataclass(frozen=True)
class PeftLayout:
    """How one method's tuned tensors are written in, and read back from, PEFT's layout."""

    # config(model, family, tuned names, method config, modules_to_save) -> the PeftConfig to save.
    config: Callable[[nn.Module, str, frozenset[str], MethodConfig, list[str]], PeftConfig]
    # to_peft(model, family, {name: tensor} of the method's tensors, config) -> {PEFT key: tensor}.
    to_peft: Callable[[nn.Module, str, dict[str, torch.Tensor], MethodConfig], dict[str, torch.Tensor]]
    # from_peft(family, {PEFT key: tensor}) -> {medtune parameter name: tensor} (modules_to_save keys included).
    from_peft: Callable[[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    # The options that rebuild a model able to hold the PEFT-layout tensors (default: config.options()).
    load_options: Callable[[MethodConfig], MethodOptions] | None = None


def strip_root(key: str) -> str:
    """Return a PEFT key without PeftModel's ``base_model.model.`` prefix."""
    return key.removeprefix(ROOT)


def whole_module_cover(model: nn.Module, names: frozenset[str] | set[str], *, outermost: bool) -> list[str]:
    """Return module names whose parameters together are exactly ``names``, each module's all inside ``names``.

    ``outermost`` picks the largest such modules (never a ModuleList/ModuleDict, which have no forward, so PEFT
    cannot wrap them); otherwise the innermost that own a parameter directly (PEFT's LN_TUNING layer passes its
    input positionally, as every norm, linear and embedding is called). Raises NotRepresentable when some module
    holds a tuned tensor beside an untuned one of its own.
    """
    from torch import nn

    chosen: list[str] = []
    covered: set[str] = set()
    for module_name, module in model.named_modules():
        if not module_name or any(module_name.startswith(c + ".") for c in chosen):
            continue
        full = {f"{module_name}.{p}" for p, _ in module.named_parameters()}
        own = {f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False)}
        if not full or isinstance(module, nn.ModuleList | nn.ModuleDict):
            continue
        if full <= names and (outermost or own):
            chosen.append(module_name)
            covered |= full
        elif own & names:
            first = sorted(own - names)[0]
            raise NotRepresentable(f"module {module_name} has tuned tensors beside an untuned one ({first})")
    left = set(names) - covered
    if left:
        raise NotRepresentable(f"tensor {sorted(left)[0]} belongs to no module PEFT can wrap whole")
    return chosen


def module_copies_config(
    model: nn.Module, family: str, tuned: frozenset[str], config: MethodConfig, modules_to_save: list[str]
) -> PeftConfig:
    """Return the LN_TUNING config whose targets are the modules holding the tuned tensors."""
    from peft import LNTuningConfig

    return LNTuningConfig(
        target_modules=whole_module_cover(model, tuned, outermost=False),
        modules_to_save=modules_to_save or None,
    )


def module_copies_to_peft(
    model: nn.Module, family: str, state: dict[str, torch.Tensor], config: MethodConfig
) -> dict[str, torch.Tensor]:
    """Return the tuned tensors under LN_TUNING's keys: ``<module>.ln_tuning_layers.<tensor>``."""
    targets = whole_module_cover(model, frozenset(state), outermost=False)
    keys = {}
    for name in state:
        module = max((t for t in targets if name.startswith(t + ".")), key=len)
        keys[name] = f"{ROOT}{module}{LN_TUNING_MARK}{name[len(module) + 1 :]}"
    return {keys[name]: tensor for name, tensor in state.items()}


def module_copies_from_peft(family: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return LN_TUNING (and modules_to_save) tensors under the model's own parameter names."""
    return {strip_root(key).replace(LN_TUNING_MARK, "."): tensor for key, tensor in state.items()}


MODULE_COPIES = PeftLayout(module_copies_config, module_copies_to_peft, module_copies_from_peft)
