"""Apply a paradigm and a method to a model: the one place where `requires_grad` is set."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from medtune.core_models import group_of
from medtune.tuning.errors import UsageError
from medtune.tuning.methods import MethodOptions, get_method
from medtune.tuning.methods.base import MethodConfig
from medtune.tuning.paradigm import Paradigm


@dataclass
class Tuned:
    """A model made ready for tuning, with the exact names of what trains and why."""

    model: nn.Module
    family: str
    method: str
    paradigm: Paradigm
    trainable: frozenset[str]  # every parameter with requires_grad
    peft: frozenset[str]  # those the method tunes inside PEFT groups
    config: MethodConfig = field(default_factory=MethodConfig)  # the method's settings, defaults resolved

    @property
    def details(self) -> dict:
        """The method's resolved settings as JSON (what the manifest stores as ``method_config``)."""
        return self.config.to_json()

    def counts(self) -> dict:
        """Return the paper's accounting: base-model totals; trainable, PEFT and per-group numbers."""
        from medtune.tuning.accounting import paper_counts

        return paper_counts(self)


def apply_paradigm(
    model: nn.Module, family: str, method: str, paradigm: Paradigm, options: MethodOptions | None = None
) -> Tuned:
    """Freeze, wrap and unfreeze ``model`` as ``paradigm`` and ``method`` say; return what trains."""
    options = options or MethodOptions()
    spec = get_method(method)
    if paradigm.family != family:
        raise UsageError(f"paradigm {paradigm} is for family {paradigm.family!r}, not {family!r}")
    peft_groups = paradigm.groups_in("PEFT")
    if not peft_groups and method != "full":
        raise UsageError(
            f"paradigm {paradigm} tunes no group with {method!r}: mark at least one group PEFT, "
            f"e.g. {','.join('PEFT' if g == paradigm.groups[-2] else 'F' for g in paradigm.groups)}"
        )
    selection = spec.select(model, family, peft_groups, options)
    model = selection.model
    if peft_groups and not selection.tuned:
        raise UsageError(f"method {method!r} finds nothing to tune in group(s) {', '.join(peft_groups)}")
    full_groups = set(paradigm.groups_in("T"))
    trainable = set(selection.tuned)
    for name, _ in model.named_parameters():
        # Adapter methods add tensors only inside PEFT groups, so a T group trains exactly its own tensors.
        if name not in selection.tuned and group_of(name, family) in full_groups:
            trainable.add(name)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    if spec.after_apply is not None:
        spec.after_apply(model, selection.tuned, selection.config)
    return Tuned(model, family, method, paradigm, frozenset(trainable), selection.tuned, selection.config)
