"""LoRA through PEFT: low-rank adapters on the linear layers of the PEFT groups."""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from medtune.core_models import group_of
from medtune.tuning.methods.base import Method, MethodOptions, Selection, register_method
from medtune.tuning.errors import UsageError

# The paper's defaults: rank 8 on self-attention query/value for MISS; rank 4 on every LLM linear for LLaVA.
DEFAULT_RANK = {"llava": 4, "miss": 8, "vlm": 4}  # vlm: as llava
DEFAULT_TARGETS: dict[str, tuple[str, ...] | None] = {
    "llava": None,  # every linear of the tuned groups
    "vlm": None,
    "miss": ("attention.self.query", "attention.self.value"),
}
NEVER_TARGET = ("lm_head",)


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
    config = LoraConfig(
        r=rank,
        lora_alpha=options.lora_alpha if options.lora_alpha is not None else 2 * rank,
        lora_dropout=options.lora_dropout,
        target_modules=targets,
        bias="none",
    )
    model = inject_adapter_in_model(config, model)
    tuned = frozenset(n for n, _ in model.named_parameters() if ".lora_" in n)
    return Selection(model, tuned, {"rank": rank, "targets": len(targets), "alpha": config.lora_alpha})


LORA = register_method(
    Method(
        name="lora",
        display="LoRA",
        kind="adapter",
        select=select_lora,
        description="PEFT LoRA adapters on the tuned groups' linear layers",
    )
)
