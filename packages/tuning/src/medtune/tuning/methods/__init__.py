"""The tuning methods; importing this package registers each one."""

from medtune.tuning.methods import attention, ffn, full, ln, lora, prefix  # noqa: F401  (registration)
from medtune.tuning.methods.base import METHODS, Method, MethodOptions, Selection, get_method, register_method

__all__ = ["METHODS", "Method", "MethodOptions", "Selection", "get_method", "register_method"]
