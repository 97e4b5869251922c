"""LayerNorm over the last dimension: autograd Function over the Triton kernels, torch reference, public API."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medtune.kernels._rows import as_rows, check_norm_args
from medtune.kernels._runtime import backend_for


def layer_norm_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Return LayerNorm of `x` ([..., hidden]) computed by torch in fp32, cast to `out_dtype` (default x's)."""
    # fp32 statistics whatever the storage dtypes, as the kernel does (and mixed fp32 params are allowed).
    y = F.layer_norm(
        x.float(), (x.shape[-1],), weight.float(), bias.float() if bias is not None else None, eps
    )
    return y.to(out_dtype or x.dtype)


class _LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps, out_dtype):
        from medtune.kernels._triton.layer_norm import layer_norm_forward

        shape = x.shape
        x2 = as_rows(x)
        r2 = as_rows(residual) if residual is not None else None
        y, h, mean, rstd = layer_norm_forward(x2, r2, weight, bias, eps, out_dtype)
        # Backward needs only the normalised input (h when fused) and fp32 per-row mean/rstd.
        ctx.save_for_backward(h if h is not None else x2, weight, mean, rstd)
        ctx.shape, ctx.x_dtype, ctx.has_residual = shape, x.dtype, residual is not None
        ctx.has_bias = bias is not None
        ctx.param_dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        ctx.set_materialize_grads(False)
        if residual is None:
            return y.view(shape)
        return y.view(shape), h.view(shape)

    @staticmethod
    def backward(ctx, dy, dh=None):
        from medtune.kernels._triton.layer_norm import layer_norm_backward

        x2, weight, mean, rstd = ctx.saved_tensors
        need_x, need_r, need_w, need_b = ctx.needs_input_grad[:4]
        need_dx = need_x or need_r
        if dy is None:  # only h was used downstream: the norm contributes nothing
            dy = torch.zeros(x2.shape, dtype=x2.dtype, device=x2.device)
        dh2 = as_rows(dh) if dh is not None else None
        dx, dw, db = layer_norm_backward(
            as_rows(dy), dh2, x2, weight, mean, rstd, ctx.x_dtype, need_dx, need_w, need_b and ctx.has_bias
        )
        dx = dx.view(ctx.shape) if dx is not None else None
        dw = dw.to(ctx.param_dtypes[0]) if dw is not None else None
        db = db.to(ctx.param_dtypes[1]) if db is not None else None
        return (dx if need_x else None), (dx if need_r else None), dw, db, None, None


def _layer_norm(x, residual, weight, bias, eps, out_dtype):
    out_dtype = out_dtype or x.dtype
    if backend_for(x) == "torch":
        if residual is None:
            return layer_norm_reference(x, weight, bias, eps, out_dtype)
        h = x + residual
        return layer_norm_reference(h, weight, bias, eps, out_dtype), h
    if torch.compiler.is_compiling():  # one graph node for the compiler (see _library)
        from medtune.kernels._library import layer_norm_fwd

        y, h, _, _ = layer_norm_fwd(x, residual, weight, bias, eps, out_dtype)
        return y if residual is None else (y, h)
    return _LayerNormFunction.apply(x, residual, weight, bias, eps, out_dtype)


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
    *,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Return LayerNorm of `x` ([..., hidden]) with `weight`/`bias` ([hidden]); output in x's dtype by default."""
    check_norm_args("layer_norm", x, None, {"weight": weight, "bias": bias})
    return _layer_norm(x, None, weight, bias, eps, out_dtype)


def layer_norm_residual(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
    *,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (LayerNorm(h), h) with h = x + residual; `x`, `residual` are [..., hidden], params [hidden]."""
    check_norm_args("layer_norm_residual", x, residual, {"weight": weight, "bias": bias})
    return _layer_norm(x, residual, weight, bias, eps, out_dtype)
