"""What a tuning method is: a typed set of options and a function that picks or adds tuned tensors.

``MethodOptions`` holds what a user may set (None = the paper's default); a method turns them into its own typed
``MethodConfig`` with every default resolved, which travels whole in the adapter manifest so that the exact
method can be rebuilt from it. A method's hooks say what differs between methods: dtype rules after applying,
how its tensors merge into the base, and how its adapter is laid out in PEFT's own format.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

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
class MethodConfig:
    """A method's settings with every default resolved; the methods without knobs use this empty one."""

    def options(self) -> MethodOptions:
        """Return the options that rebuild exactly this configuration."""
        return MethodOptions()

    def to_json(self) -> dict[str, Any]:
        """Return the configuration as the manifest stores it."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MethodConfig:
        """Return the configuration a manifest stored (unknown keys are an error, not silently dropped)."""
        names = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Selection:
    """What a method did to a model: the (possibly wrapped) model, its tuned tensors' names, its resolved config."""

    model: nn.Module
    tuned: frozenset[str]  # parameter names the method trains inside PEFT groups
    config: MethodConfig = field(default_factory=MethodConfig)

    @property
    def details(self) -> dict[str, Any]:
        """The resolved configuration as JSON (what the run summary and the manifest record)."""
        return self.config.to_json()


# select(model, family, peft_groups, options) -> Selection. Intrinsic methods return the same model and
# names of existing tensors; adapter methods return a wrapped model and the names of the added tensors.
Selector = Callable[["nn.Module", str, tuple[str, ...], MethodOptions], Selection]


@dataclass(frozen=True)
class Method:
    """A registered tuning method and its hooks (None: nothing to do for that step)."""

    name: str
    display: str  # how the paper's tables write it
    kind: Kind
    select: Selector
    description: str
    config_type: type[MethodConfig] = MethodConfig
    # after_apply(model, tuned names, config): dtype rules once requires_grad is set (LN keeps norms fp32).
    after_apply: Callable[[nn.Module, frozenset[str], MethodConfig], None] | None = None
    # merge(model) -> how many modules were folded into the base weights; None: the tuned tensors are base weights.
    merge: Callable[[nn.Module], int] | None = None
    # How the adapter is written in PEFT's own format (medtune.tuning.methods.peft_layout.PeftLayout).
    peft: Any = None

    def config_from_manifest(self, manifest: dict[str, Any]) -> MethodConfig:
        """Return the method's config a manifest stored, reading older manifests' ``method_details`` too."""
        stored = manifest.get("method_config")
        if stored is not None:
            return self.config_type.from_json(stored)
        legacy = getattr(self.config_type, "from_details", None)
        return (
            legacy(manifest.get("method_details") or {}, manifest["family"]) if legacy else self.config_type()
        )


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
