"""The tuning methods; asking for the registry (or one method) registers the built-in ones.

``BUILTIN_METHODS`` and ``MethodOptions`` import no torch, so the `medtune` parser can name the methods and
their options instantly; ``METHODS`` imports every method module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medtune.tuning.methods.base import (
    BUILTIN_METHODS,
    Method,
    MethodOptions,
    Selection,
    get_method,
    register_builtin_methods,
    register_method,
)

__all__ = [
    "BUILTIN_METHODS",
    "METHODS",
    "Method",
    "MethodOptions",
    "Selection",
    "get_method",
    "register_builtin_methods",
    "register_method",
]


def __getattr__(name: str):
    if name == "METHODS":
        return register_builtin_methods()
    raise AttributeError(f"module 'medtune.tuning.methods' has no attribute {name!r}")


if TYPE_CHECKING:
    from medtune.tuning.methods.base import METHODS
