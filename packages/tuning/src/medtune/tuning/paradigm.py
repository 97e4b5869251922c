"""Paradigms: one state per module group (T trainable, F frozen, PEFT tuned with the method)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medtune.core_models import FAMILY_GROUPS
from medtune.tuning.errors import UsageError

__all__ = ["DEFAULT_PARADIGM", "STATES", "Paradigm", "State", "UsageError"]

State = Literal["T", "F", "PEFT"]
STATES: tuple[State, ...] = ("T", "F", "PEFT")
DEFAULT_PARADIGM = {"llava": "F,F,PEFT,F", "miss": "T,PEFT,T", "vlm": "F,F,PEFT,F"}


@dataclass(frozen=True)
class Paradigm:
    """The state of each of a family's module groups, in the family's group order."""

    family: str
    states: tuple[State, ...]

    @classmethod
    def parse(cls, text: str | None, family: str) -> Paradigm:
        """Return the paradigm written as ``"F,F,PEFT,F"`` (None: the family's default)."""
        if family not in FAMILY_GROUPS:
            raise UsageError(f"unknown family {family!r}; choose one of: {', '.join(FAMILY_GROUPS)}")
        groups = FAMILY_GROUPS[family]
        text = DEFAULT_PARADIGM[family] if text is None else text
        parts = [p.strip().upper() for p in text.split(",")]
        if len(parts) != len(groups):
            raise UsageError(
                f"paradigm {text!r} has {len(parts)} states but family {family!r} has {len(groups)} groups "
                f"({', '.join(groups)}); write one of T, F, PEFT per group, e.g. {DEFAULT_PARADIGM[family]}"
            )
        bad = [p for p in parts if p not in STATES]
        if bad:
            raise UsageError(
                f"paradigm {text!r} has unknown state(s) {', '.join(map(repr, bad))}; each state is T (trainable), "
                f"F (frozen) or PEFT (tuned with the method), e.g. {DEFAULT_PARADIGM[family]}"
            )
        return cls(family, tuple(parts))  # type: ignore[arg-type]

    @property
    def groups(self) -> tuple[str, ...]:
        return FAMILY_GROUPS[self.family]

    def state(self, group: str) -> State:
        """Return the state of ``group``."""
        return dict(zip(self.groups, self.states))[group]

    def groups_in(self, state: State) -> tuple[str, ...]:
        """Return the groups whose state is ``state``."""
        return tuple(g for g, s in zip(self.groups, self.states) if s == state)

    def __str__(self) -> str:
        return ",".join(self.states)
