"""RMSNorm over the last dimension: autograd Function over the Triton kernels, torch reference, public API."""

from __future__ import annotations

import torch

from medtune.kernels._rows import as_rows, check_norm_args
from medtune.kernels._runtime import backend_for


def rms_norm_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    offset: float = 0.0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Return RMSNorm of `x` ([..., hidden]) times (weight + offset), computed by torch in fp32."""
    h = x.float()
    rstd = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * rstd * (weight.float() + offset)).to(out_dtype or x.dtype)


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, eps, offset, out_dtype):
        from medtune.kernels._triton.rms_norm import rms_norm_forward

        shape = x.shape
        x2 = as_rows(x)
        r2 = as_rows(residual) if residual is not None else None
        y, h, rstd = rms_norm_forward(x2, r2, weight, eps, offset, out_dtype)
        # Backward needs only the normalised input (h when fused) and the fp32 per-row rstd.
        ctx.save_for_backward(h if h is not None else x2, weight, rstd)
        ctx.shape, ctx.x_dtype, ctx.offset = shape, x.dtype, offset
        ctx.set_materialize_grads(False)
        if residual is None:
            return y.view(shape)
        return y.view(shape), h.view(shape)

    @staticmethod
    def backward(ctx, dy, dh=None):
        from medtune.kernels._triton.rms_norm import rms_norm_backward

        x2, weight, rstd = ctx.saved_tensors
        need_x, need_r, need_w = ctx.needs_input_grad[:3]
        if dy is None:  # only h was used downstream: the norm contributes nothing
            dy = torch.zeros(x2.shape, dtype=x2.dtype, device=x2.device)
        dh2 = as_rows(dh) if dh is not None else None
        dx, dw = rms_norm_backward(
            as_rows(dy), dh2, x2, weight, rstd, ctx.offset, ctx.x_dtype, need_x or need_r, need_w
        )
        dx = dx.view(ctx.shape) if dx is not None else None
        dw = dw.to(weight.dtype) if dw is not None else None
        return (dx if need_x else None), (dx if need_r else None), dw, None, None, None


def _rms_norm(x, residual, weight, eps, offset, out_dtype):
    out_dtype = out_dtype or x.dtype
    if backend_for(x) == "torch":
        if residual is None:
            return rms_norm_reference(x, weight, eps, offset, out_dtype)
        h = x + residual
        return rms_norm_reference(h, weight, eps, offset, out_dtype), h
    if torch.compiler.is_compiling():  # one graph node for the compiler (see _library)
        from medtune.kernels._library import rms_norm_fwd

        y, h, _ = rms_norm_fwd(x, residual, weight, eps, offset, out_dtype)
        return y if residual is None else (y, h)
    return _RMSNormFunction.apply(x, residual, weight, eps, offset, out_dtype)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    offset: float = 0.0,
    *,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Return RMSNorm of `x` ([..., hidden]) scaled by (weight + offset) ([hidden]); offset=1 is Gemma's 1 + w."""
    check_norm_args("rms_norm", x, None, {"weight": weight})
    return _rms_norm(x, None, weight, eps, offset, out_dtype)


def rms_norm_residual(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    offset: float = 0.0,
    *,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (RMSNorm(h), h) with h = x + residual ([..., hidden]), as LLaMA/Mistral pre-norm blocks need."""
    check_norm_args("rms_norm_residual", x, residual, {"weight": weight})
    return _rms_norm(x, residual, weight, eps, offset, out_dtype)
