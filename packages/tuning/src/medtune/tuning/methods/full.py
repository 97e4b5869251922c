"""Full fine-tuning: every tensor of the PEFT groups trains (with T/F still applying to the others)."""

from __future__ import annotations

from torch import nn

from medtune.core_models import group_of
from medtune.tuning.methods.base import Method, MethodOptions, Selection, register_method
from medtune.tuning.methods.peft_layout import MODULE_COPIES


def select_all(model: nn.Module, family: str, groups: tuple[str, ...], options: MethodOptions) -> Selection:
    """Return the names of every parameter inside ``groups``."""
    return Selection(
        model, frozenset(n for n, _ in model.named_parameters() if group_of(n, family) in groups)
    )


FULL = register_method(
    Method(
        name="full",
        display="Full",
        kind="full",
        select=select_all,
        description="every parameter of the tuned groups",
        peft=MODULE_COPIES,
    )
)
