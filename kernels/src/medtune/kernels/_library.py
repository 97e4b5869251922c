"""The fused norms as ``torch.library`` custom ops, so ``torch.compile`` captures them without a graph break.

An autograd Function that launches Triton from Python is opaque to the compiler: Dynamo breaks the graph at it,
and CUDA graphs cannot take the launches in. Registered as custom ops with fake (shape-only) implementations
and their own autograd formula, the norms become single nodes of the compiled graph. Eager calls keep the
autograd Functions in layer_norm.py / rms_norm.py: a custom op's dispatch costs more per call, and at the
widths of a 7B model's norms the per-call cost is what dominates.

The backward ops take the same need-flags as the Functions, so a compiled LN-tuning step still skips the
gradients nobody asked for. Missing outputs (no residual, a gradient not needed) are empty tensors: a custom
op returns tensors only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from medtune.kernels._rows import as_rows


def _none_if_empty(t: Tensor) -> Tensor | None:
    return t if t.numel() else None


def _rows(x: Tensor) -> int:
    return x.numel() // x.shape[-1] if x.shape[-1] else 0


# --- RMSNorm -------------------------------------------------------------------------------------------------


@torch.library.custom_op("medtune::rms_norm_fwd", mutates_args=())
def rms_norm_fwd(
    x: Tensor, residual: Tensor | None, weight: Tensor, eps: float, offset: float, out_dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Return (y, h or an empty tensor, fp32 rstd [rows]) for `x` ([..., hidden])."""
    from medtune.kernels._triton.rms_norm import rms_norm_forward

    r2 = as_rows(residual) if residual is not None else None
    y, h, rstd = rms_norm_forward(as_rows(x), r2, weight, eps, offset, out_dtype)
    return y.view(x.shape), (h.view(x.shape) if h is not None else x.new_empty(0)), rstd


@rms_norm_fwd.register_fake
def _(x, residual, weight, eps, offset, out_dtype):
    h = torch.empty_like(x, memory_format=torch.contiguous_format) if residual is not None else x.new_empty(0)
    return x.new_empty(x.shape, dtype=out_dtype), h, x.new_empty(_rows(x), dtype=torch.float32)


@torch.library.custom_op("medtune::rms_norm_bwd", mutates_args=())
def rms_norm_bwd(
    dy: Tensor,
    dh: Tensor | None,
    x: Tensor,
    weight: Tensor,
    rstd: Tensor,
    offset: float,
    need_dx: bool,
    need_dw: bool,
) -> tuple[Tensor, Tensor]:
    """Return (dx or empty, fp32 dweight or empty); `dy`, `dh`, `x` are [..., hidden]."""
    from medtune.kernels._triton.rms_norm import rms_norm_backward

    dh2 = as_rows(dh) if dh is not None else None
    dx, dw = rms_norm_backward(as_rows(dy), dh2, as_rows(x), weight, rstd, offset, x.dtype, need_dx, need_dw)
    return (
        dx.view(x.shape) if dx is not None else x.new_empty(0),
        dw if dw is not None else x.new_empty(0, dtype=torch.float32),
    )


@rms_norm_bwd.register_fake
def _(dy, dh, x, weight, rstd, offset, need_dx, need_dw):
    dx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_dx else x.new_empty(0)
    dw = x.new_empty(x.shape[-1] if need_dw else 0, dtype=torch.float32)
    return dx, dw


def _rms_setup(ctx, inputs, output):
    x, residual, weight, _eps, offset, _out_dtype = inputs
    _y, h, rstd = output
    # Backward needs only the normalised input (h when fused) and the fp32 per-row rstd, as in eager.
    ctx.save_for_backward(h if residual is not None else x, weight, rstd)
    ctx.offset = offset


def _rms_backward(ctx, dy, dh, _drstd):
    x, weight, rstd = ctx.saved_tensors
    need_x, need_r, need_w = ctx.needs_input_grad[:3]
    dh = dh if dh is not None and dh.numel() else None
    dx, dw = rms_norm_bwd(dy, dh, x, weight, rstd, ctx.offset, need_x or need_r, need_w)
    dx, dw = _none_if_empty(dx), _none_if_empty(dw)
    dw = dw.to(weight.dtype) if dw is not None else None
    return (dx if need_x else None), (dx if need_r else None), dw, None, None, None


rms_norm_fwd.register_autograd(_rms_backward, setup_context=_rms_setup)


# --- LayerNorm -----------------------------------------------------------------------------------------------


@torch.library.custom_op("medtune::layer_norm_fwd", mutates_args=())
def layer_norm_fwd(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    eps: float,
    out_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return (y, h or an empty tensor, fp32 mean [rows], fp32 rstd [rows]) for `x` ([..., hidden])."""
    from medtune.kernels._triton.layer_norm import layer_norm_forward

    r2 = as_rows(residual) if residual is not None else None
    y, h, mean, rstd = layer_norm_forward(as_rows(x), r2, weight, bias, eps, out_dtype)
    return y.view(x.shape), (h.view(x.shape) if h is not None else x.new_empty(0)), mean, rstd


@layer_norm_fwd.register_fake
def _(x, residual, weight, bias, eps, out_dtype):
    h = torch.empty_like(x, memory_format=torch.contiguous_format) if residual is not None else x.new_empty(0)
    stats = x.new_empty(_rows(x), dtype=torch.float32)
    return x.new_empty(x.shape, dtype=out_dtype), h, stats, torch.empty_like(stats)


@torch.library.custom_op("medtune::layer_norm_bwd", mutates_args=())
def layer_norm_bwd(
    dy: Tensor,
    dh: Tensor | None,
    x: Tensor,
    weight: Tensor,
    mean: Tensor,
    rstd: Tensor,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Return (dx or empty, fp32 dweight or empty, fp32 dbias or empty); `dy`, `dh`, `x` are [..., hidden]."""
    from medtune.kernels._triton.layer_norm import layer_norm_backward

    dh2 = as_rows(dh) if dh is not None else None
    dx, dw, db = layer_norm_backward(
        as_rows(dy), dh2, as_rows(x), weight, mean, rstd, x.dtype, need_dx, need_dw, need_db
    )
    # Fresh empties each: a custom op's outputs may not alias one another.
    return (
        dx.view(x.shape) if dx is not None else x.new_empty(0),
        dw if dw is not None else x.new_empty(0, dtype=torch.float32),
        db if db is not None else x.new_empty(0, dtype=torch.float32),
    )


@layer_norm_bwd.register_fake
def _(dy, dh, x, weight, mean, rstd, need_dx, need_dw, need_db):
    dx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_dx else x.new_empty(0)
    hidden = x.shape[-1]
    return (
        dx,
        x.new_empty(hidden if need_dw else 0, dtype=torch.float32),
        x.new_empty(hidden if need_db else 0, dtype=torch.float32),
    )


def _ln_setup(ctx, inputs, output):
    x, residual, weight, bias, _eps, _out_dtype = inputs
    _y, h, mean, rstd = output
    ctx.save_for_backward(h if residual is not None else x, weight, mean, rstd)
    ctx.has_bias = bias is not None
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _ln_backward(ctx, dy, dh, _dmean, _drstd):
    x, weight, mean, rstd = ctx.saved_tensors
    need_x, need_r, need_w, need_b = ctx.needs_input_grad[:4]
    dh = dh if dh is not None and dh.numel() else None
    dx, dw, db = layer_norm_bwd(
        dy, dh, x, weight, mean, rstd, need_x or need_r, need_w, need_b and ctx.has_bias
    )
    dx, dw, db = _none_if_empty(dx), _none_if_empty(dw), _none_if_empty(db)
    dw = dw.to(weight.dtype) if dw is not None else None
    db = db.to(ctx.bias_dtype) if db is not None else None
    return (dx if need_x else None), (dx if need_r else None), dw, db, None, None


layer_norm_fwd.register_autograd(_ln_backward, setup_context=_ln_setup)
