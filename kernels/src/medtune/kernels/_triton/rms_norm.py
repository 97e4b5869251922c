"""Triton RMSNorm: forward (optionally fused with a residual add) and backward, plus their launchers."""

from __future__ import annotations

import torch
import triton.language as tl

from medtune.kernels._runtime import Launch, dual_kernel, record_launch
from medtune.kernels._triton import config
from medtune.kernels._triton.config import block_size, launch_options

# See layer_norm.py: the builtin tl.reduce with this combine function runs compiled and interpreted.
_add = tl.standard._sum_combine


@dual_kernel
def _rms_norm_fwd(
    X, R, H, Y, W, Rstd,
    stride_x, stride_r, stride_h, stride_y, N, eps, offset,
    BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        # Round h to its storage dtype before normalising, so y is the norm of the h we return.
        h = (x + r).to(H.dtype.element_ty)
        tl.store(H + row * stride_h + cols, h, mask=mask)
        x = h.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.reduce(x * x, 0, _add) / N + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32) + offset
    tl.store(Y + row * stride_y + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(Rstd + row, rstd)


@dual_kernel
def _rms_norm_bwd(
    X, W, Rstd, DY, DH, DX, DW,
    stride_x, stride_dy, stride_dh, stride_dx, n_rows, N, offset,
    BLOCK: tl.constexpr, COMPUTE_DX: tl.constexpr, COMPUTE_DW: tl.constexpr, HAS_DH: tl.constexpr,
    PREFETCH: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32) + offset
    dw_acc = tl.full((BLOCK,), 0.0, tl.float32)
    first = pid.to(tl.int64)
    step = tl.num_programs(0)
    if PREFETCH:  # a row past the end loads nothing: all its columns are masked off
        valid = cols < tl.where(first < n_rows, N, 0)
        x_next = tl.load(X + first * stride_x + cols, mask=valid, other=0.0)
        dy_next = tl.load(DY + first * stride_dy + cols, mask=valid, other=0.0)
    # Fixed strided rows per program + fp32 partials + a separate reduction = reproducible dgamma.
    for row in range(first, n_rows, step):
        if PREFETCH:  # the next row's loads are in flight during this row's reduction
            x = x_next.to(tl.float32)
            dy = dy_next.to(tl.float32)
            ahead = row + step
            valid = cols < tl.where(ahead < n_rows, N, 0)
            x_next = tl.load(X + ahead * stride_x + cols, mask=valid, other=0.0)
            dy_next = tl.load(DY + ahead * stride_dy + cols, mask=valid, other=0.0)
        else:
            x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(Rstd + row)
        xhat = x * rstd
        if COMPUTE_DX:
            wdy = w * dy
            c1 = tl.reduce(xhat * wdy, 0, _add) / N
            dx = (wdy - xhat * c1) * rstd
            if HAS_DH:
                dx += tl.load(DH + row * stride_dh + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        if COMPUTE_DW:
            dw_acc += dy * xhat
    if COMPUTE_DW:
        tl.store(DW + pid * N + cols, dw_acc, mask=mask)


def rms_norm_forward(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
    offset: float,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Return (y, h or None, rstd) for `x`, `residual` of shape [rows, hidden] (unit column stride)."""
    n_rows, n = x.shape
    block = block_size(n)
    y = torch.empty((n_rows, n), dtype=out_dtype, device=x.device)
    h = torch.empty_like(x, memory_format=torch.contiguous_format) if residual is not None else None
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    if n_rows == 0:
        return y, h, rstd
    r = residual if residual is not None else x
    hh = h if h is not None else x
    flags = {"HAS_RESIDUAL": residual is not None}
    _rms_norm_fwd[(n_rows,)](
        x, r, hh, y, weight, rstd,
        x.stride(0), r.stride(0), hh.stride(0), y.stride(0), n, eps, float(offset),
        BLOCK=block, **launch_options(block), **flags,
    )  # fmt: skip
    record_launch(Launch("rms_norm_fwd", (n_rows,), flags))
    return y, h, rstd


def rms_norm_backward(
    dy: torch.Tensor,
    dh: torch.Tensor | None,
    x: torch.Tensor,
    weight: torch.Tensor,
    rstd: torch.Tensor,
    offset: float,
    x_dtype: torch.dtype,
    need_dx: bool,
    need_dw: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Return (dx, fp32 dweight), each None when not asked for; `dy`, `dh`, `x` are [rows, hidden]."""
    n_rows, n = x.shape
    if not (need_dx or need_dw):
        return None, None
    if n_rows == 0:
        dx = torch.empty_like(x, dtype=x_dtype) if need_dx else None
        return dx, torch.zeros(n, dtype=torch.float32, device=x.device) if need_dw else None
    block = block_size(n)
    programs = config.backward_programs(x, n_rows, block)
    buffers: list[str] = []
    dx = torch.empty((n_rows, n), dtype=x_dtype, device=x.device) if need_dx else None
    dw_part = None
    if need_dx:
        buffers.append("dx")
    if need_dw:
        dw_part = torch.empty((programs, n), dtype=torch.float32, device=x.device)
        buffers.append("dweight_partial")
    flags = {
        "COMPUTE_DX": need_dx,
        "COMPUTE_DW": need_dw,
        "HAS_DH": dh is not None,
        "PREFETCH": config.backward_prefetch(block),
    }
    placeholder = rstd  # never read or written: its switch is off
    dh_arg = dh if dh is not None else dy
    _rms_norm_bwd[(programs,)](
        x, weight, rstd, dy, dh_arg,
        dx if dx is not None else placeholder,
        dw_part if dw_part is not None else placeholder,
        x.stride(0), dy.stride(0), dh_arg.stride(0), dx.stride(0) if dx is not None else 0,
        n_rows, n, float(offset),
        BLOCK=block, **launch_options(block, backward=True), **flags,
    )  # fmt: skip
    record_launch(Launch("rms_norm_bwd", (programs,), flags, tuple(buffers)))
    # torch's dim reduction has a fixed order (no atomics), so the second stage is deterministic too.
    return dx, dw_part.sum(0) if dw_part is not None else None
