"""FSDP2 (per-parameter sharding) of a partly frozen model: wrap each decoder layer, then the root."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from medtune.tuning.errors import UsageError


def shard_model(model: nn.Module, layer_class: str | None, *, bf16: bool = False) -> int:
    """Shard ``model`` in place with ``fully_shard``, one unit per ``layer_class`` module; return that count.

    Needs an initialised process group (`medtune train --num-processes N --fsdp`). FSDP2 shards every
    parameter on its own, so frozen weights hold no gradient or optimizer state (unlike FSDP1's flat
    parameters with use_orig_params, which keep full-size gradient buffers).
    """
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:
        raise UsageError(
            f"--fsdp needs FSDP2's public fully_shard, which torch {torch.__version__} lacks (it came with "
            "torch 2.6); upgrade torch, or drop --fsdp and use --num-processes alone (DDP)"
        ) from None

    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        raise UsageError("--fsdp shards the model over processes; run it with --num-processes 2 or more")
    if layer_class is None:
        raise UsageError("--fsdp needs the preset's decoder layer class to wrap, and this preset names none")
    # Parameters gathered in bf16 for compute, gradients reduced in fp32 (LN gammas absorb tiny updates).
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    layers = [m for m in model.modules() if type(m).__name__ == layer_class]
    if not layers:
        raise UsageError(f"--fsdp found no {layer_class} module in the model to wrap; check the preset")
    for layer in layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return len(layers)


def is_sharded(model: nn.Module) -> bool:
    """Return whether ``model`` was sharded by ``fully_shard``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def skip_gradient_sync(model: nn.Module, accelerator, skip: bool):
    """Return a context in which backward accumulates locally without reducing gradients across processes."""
    if not skip:
        return contextlib.nullcontext()
    if is_sharded(model):
        return _fsdp_no_sync(model)
    return accelerator.no_sync(model)


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
