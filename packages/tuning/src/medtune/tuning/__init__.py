"""medtune.tuning: methods, paradigms, the training loop, checkpoints, adapters and the `medtune` CLI."""

from __future__ import annotations

__all__ = ["load_adapter", "rebuild_from_manifest", "save_adapter"]
_HOMES = {"load_adapter": "adapter", "save_adapter": "adapter", "rebuild_from_manifest": "rebuild"}


def __getattr__(name: str):
    # Lazy, so `medtune --help` and the CLI's usage errors do not pay for importing torch.
    if name in __all__:
        import importlib

        return getattr(importlib.import_module(f"medtune.tuning.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'medtune.tuning' has no attribute {name!r}")
