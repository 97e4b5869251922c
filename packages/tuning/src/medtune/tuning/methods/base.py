"""What a tuning method is: a typed set of options and a function that picks or adds tuned tensors."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from medtune.tuning.errors import UsageError
from medtune.tuning.knobs import knob

if TYPE_CHECKING:  # the CLI names methods and reads their options without importing torch
    from torch import nn

Kind = Literal["intrinsic", "adapter", "full"]


@dataclass
class MethodOptions:
    """Knobs of the methods; None means the paper's default for the family (DESIGN.md)."""

    # Each field is also a `medtune train`/`params` flag and a config key (medtune.tuning.knobs).
    lora_rank: int | None = knob(None, "LoRA rank; none: the paper's, 4 for llava, 8 for miss")
    lora_alpha: float | None = knob(None, "LoRA scaling numerator; none: twice the rank")
    lora_dropout: float = knob(0.05, "dropout on the LoRA branch")
    lora_targets: tuple[str, ...] | None = knob(
        None,
        "module-name suffixes LoRA wraps, comma-separated; none: the paper's for the family",
        metavar="q_proj,v_proj",
    )
    prefix_tokens: int | None = knob(
        None, "virtual prefix tokens; none: the paper's, 5 for llava, 10 for miss"
    )
    prefix_projection: bool = knob(True, "re-parameterise the prefix through an MLP as wide as the model")

    def __post_init__(self) -> None:
        if self.lora_rank is not None and self.lora_rank < 1:
            raise UsageError(f"--lora-rank must be a positive integer, got {self.lora_rank}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise UsageError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.prefix_tokens is not None and self.prefix_tokens < 1:
            raise UsageError(f"--prefix-tokens must be a positive integer, got {self.prefix_tokens}")


@dataclass(frozen=True)
class Selection:
    """What a method did to a model: the (possibly wrapped) model and the names of its tuned tensors."""

    model: nn.Module
    tuned: frozenset[str]  # parameter names the method trains inside PEFT groups
    details: dict = field(default_factory=dict)


# select(model, family, peft_groups, options) -> Selection. Intrinsic methods return the same model and
# names of existing tensors; adapter methods return a wrapped model and the names of the added tensors.
Selector = Callable[["nn.Module", str, tuple[str, ...], MethodOptions], Selection]


@dataclass(frozen=True)
class Method:
    """A registered tuning method."""

    name: str
    display: str  # how the paper's tables write it
    kind: Kind
    select: Selector
    description: str


# The built-in methods, each registered by the module of this package with its name; imported on first lookup.
BUILTIN_METHODS = ("full", "ln", "attention", "ffn", "lora", "prefix")


class Registry(Mapping[str, Method]):
    """The registered methods by name; the first read imports the built-in ones (so naming it stays light)."""

    def __init__(self) -> None:
        self.registered: dict[str, Method] = {}

    def _all(self) -> dict[str, Method]:
        for name in BUILTIN_METHODS:
            importlib.import_module(f"medtune.tuning.methods.{name}")
        return self.registered

    def __getitem__(self, name: str) -> Method:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


METHODS = Registry()


def register_builtin_methods() -> Mapping[str, Method]:
    """Import the modules that register the built-in methods (once) and return the registry."""
    METHODS._all()
    return METHODS


def register_method(method: Method) -> Method:
    """Add a method to the registry and return it."""
    METHODS.registered[method.name] = method
    return method


def get_method(name: str) -> Method:
    """Return the registered method ``name`` or raise a UsageError listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise UsageError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}") from None
