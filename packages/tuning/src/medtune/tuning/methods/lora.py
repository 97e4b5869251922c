"""LoRA through PEFT: low-rank adapters on the linear layers of the PEFT groups."""

from __future__ import annotations

from dataclasses import dataclass

import peft
import torch
from peft import inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from medtune.core_models import group_of
from medtune.tuning.errors import UsageError
from medtune.tuning.methods.base import Method, MethodConfig, MethodOptions, Selection, register_method
from medtune.tuning.methods.peft_layout import ROOT, PeftLayout, strip_root

# The paper's defaults: rank 8 on self-attention query/value for MISS; rank 4 on every LLM linear for LLaVA.
DEFAULT_RANK = {"llava": 4, "miss": 8, "vlm": 4}  # vlm: as llava
DEFAULT_TARGETS: dict[str, tuple[str, ...] | None] = {
    "llava": None,  # every linear of the tuned groups
    "vlm": None,
    "miss": ("attention.self.query", "attention.self.value"),
}
NEVER_TARGET = ("lm_head",)
FACTORS = (".lora_A.", ".lora_B.")
ADAPTER_NAME = "default"  # what inject_adapter_in_model calls the one adapter


@dataclass(frozen=True)
class LoraConfig(MethodConfig):
    """LoRA as trained: rank, scaling numerator, dropout and the full names of the wrapped linear layers."""

    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))  # JSON gives a list

    def options(self) -> MethodOptions:
        # Full module names match only themselves under the suffix rule, so the same layers are wrapped again.
        return MethodOptions(
            lora_rank=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            lora_targets=self.targets or None,  # () from an older manifest: the family's default targets
        )

    @classmethod
    def from_details(cls, details: dict, family: str) -> LoraConfig:
        """Read an older manifest, which kept rank and alpha and only the number of targets (the defaults)."""
        rank = details.get("rank") or DEFAULT_RANK[family]
        return cls(rank, details.get("alpha") or 2 * rank, 0.05, ())


def lora_target_modules(
    model: nn.Module, family: str, groups: tuple[str, ...], options: MethodOptions
) -> list[str]:
    """Return the full names of the linear layers LoRA wraps (suffix match on ``options.lora_targets``)."""
    targets = options.lora_targets if options.lora_targets is not None else DEFAULT_TARGETS[family]
    linears = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name not in NEVER_TARGET and group_of(name, family) in groups
    ]
    if targets is not None:
        linears = [n for n in linears if any(n == t or n.endswith("." + t) for t in targets)]
    if not linears:
        raise UsageError(
            f"LoRA targets {', '.join(targets) if targets else '(all linears)'} match no linear layer in the "
            f"tuned group(s) {', '.join(groups)}; pass --lora-targets with suffixes of module names such as "
            "q_proj,v_proj (see `medtune params ... --json` for the groups)"
        )
    return linears


def select_lora(model: nn.Module, family: str, groups: tuple[str, ...], options: MethodOptions) -> Selection:
    """Inject LoRA adapters into the target linears of ``groups`` and return the adapter tensors' names."""
    targets = lora_target_modules(model, family, groups, options)
    rank = options.lora_rank or DEFAULT_RANK[family]
    alpha = options.lora_alpha if options.lora_alpha is not None else 2 * rank
    config = LoraConfig(rank, alpha, options.lora_dropout, tuple(targets))
    model = inject_adapter_in_model(peft_config(model, family, frozenset(), config, []), model)
    tuned = frozenset(n for n, _ in model.named_parameters() if any(f in n for f in FACTORS))
    return Selection(model, tuned, config)


def peft_config(
    model: nn.Module, family: str, tuned: frozenset[str], config: LoraConfig, modules_to_save: list[str]
) -> peft.LoraConfig:
    """Return PEFT's LoraConfig for ``config`` (the one it was trained with, plus the T groups' modules)."""
    return peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.targets),
        bias="none",
        modules_to_save=modules_to_save or None,
    )


def to_peft(
    model: nn.Module, family: str, state: dict[str, torch.Tensor], config: LoraConfig
) -> dict[str, torch.Tensor]:
    """Return the factors under PEFT's keys: ``base_model.model.<linear>.lora_A.weight``."""
    return {ROOT + name.replace(f".{ADAPTER_NAME}.", ".", 1): t for name, t in state.items()}


def from_peft(family: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return PEFT-layout factors (and modules_to_save tensors) under the model's own parameter names."""

    def name_of(key: str) -> str:
        name = strip_root(key)
        for factor in FACTORS:
            if factor in name:
                return name.replace(factor, f"{factor}{ADAPTER_NAME}.", 1)
        return name  # a modules_to_save tensor keeps its module's own name

    return {name_of(key): tensor for key, tensor in state.items()}


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


LORA = register_method(
    Method(
        name="lora",
        display="LoRA",
        kind="adapter",
        select=select_lora,
        description="PEFT LoRA adapters on the tuned groups' linear layers",
        config_type=LoraConfig,
        merge=merge_lora,
        peft=PeftLayout(peft_config, to_peft, from_peft),
    )
)
