"""medtune.tuning: methods, paradigms, the training loop, checkpoints, adapters and the `medtune` CLI."""

from __future__ import annotations

__all__ = ["load_adapter", "save_adapter"]


def __getattr__(name: str):
    # Lazy, so `medtune --help` and the CLI's usage errors do not pay for importing torch.
    if name in __all__:
        from medtune.tuning import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module 'medtune.tuning' has no attribute {name!r}")
