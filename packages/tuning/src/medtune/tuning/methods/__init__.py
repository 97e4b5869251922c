"""The tuning methods; asking for the registry (or one method) registers the built-in ones.

Importing this package imports no torch, so the `medtune` parser can name the methods and their options
instantly; the first read of ``METHODS`` (or ``get_method``) imports every method module.
"""

from __future__ import annotations

from medtune.tuning.methods.base import (
    BUILTIN_METHODS,
    METHODS,
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
