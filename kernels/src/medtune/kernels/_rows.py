"""Argument checks and the [rows, hidden] view that both norms' launchers work on."""

from __future__ import annotations

import torch

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """Return `t` (shape [..., hidden]) as [rows, hidden] with unit column stride, copying only if needed."""
    rows = t.reshape(-1, t.shape[-1]) if t.dim() != 2 else t
    if rows.stride(-1) != 1 or (rows.shape[0] > 1 and rows.stride(0) < rows.shape[1]):
        rows = rows.contiguous()
    return rows


def check_norm_args(
    op: str,
    x: torch.Tensor,
    residual: torch.Tensor | None,
    params: dict[str, torch.Tensor | None],
) -> None:
    """Raise ValueError naming the argument when shapes, dtypes or devices cannot be normalised together."""
    if x.dim() == 0:
        raise ValueError(f"{op}: x must have at least one dimension (the hidden one), got a scalar.")
    if x.dtype not in _FLOATS:
        raise ValueError(f"{op}: x has dtype {x.dtype}; use float32, float16 or bfloat16.")
    hidden = x.shape[-1]
    if residual is not None and (residual.shape != x.shape or residual.device != x.device):
        raise ValueError(
            f"{op}: residual has shape {tuple(residual.shape)} on {residual.device} but x has "
            f"{tuple(x.shape)} on {x.device}; they must match to be added."
        )
    if residual is not None and residual.dtype != x.dtype:
        raise ValueError(f"{op}: residual has dtype {residual.dtype} but x has {x.dtype}; cast one of them.")
    for name, p in params.items():
        if p is None:
            continue
        if p.shape != (hidden,):
            raise ValueError(
                f"{op}: {name} has shape {tuple(p.shape)} but x's last dimension is {hidden}; "
                f"{name} must have shape ({hidden},)."
            )
        if p.dtype not in _FLOATS:
            raise ValueError(f"{op}: {name} has dtype {p.dtype}; use float32, float16 or bfloat16.")
        if p.device != x.device:
            raise ValueError(f"{op}: {name} is on {p.device} but x is on {x.device}; move them together.")
