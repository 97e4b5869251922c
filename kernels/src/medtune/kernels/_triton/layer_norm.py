"""Triton LayerNorm: forward (optionally fused with a residual add) and backward, plus their launchers."""

from __future__ import annotations

import torch
import triton.language as tl

from medtune.kernels._runtime import Launch, dual_kernel, record_launch
from medtune.kernels._triton import config
from medtune.kernels._triton.config import block_size, launch_options

# tl.sum and tl.zeros are themselves jit functions whose flavour (compiled or interpreted) triton fixes
# when it is imported; the kernels use only builtins (tl.reduce with this combine function, tl.full),
# so the same code runs compiled and interpreted whenever TRITON_INTERPRET is set.
_add = tl.standard._sum_combine


@dual_kernel
def _layer_norm_fwd(
    X, R, H, Y, W, B, Mean, Rstd,
    stride_x, stride_r, stride_h, stride_y, N, eps,
    BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HAS_BIAS: tl.constexpr,
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
    mean = tl.reduce(x, 0, _add) / N
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.reduce(xc * xc, 0, _add) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    y = xc * rstd * w
    if HAS_BIAS:
        y += tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)


@dual_kernel
def _layer_norm_bwd(
    X, W, Mean, Rstd, DY, DH, DX, DW, DB,
    stride_x, stride_dy, stride_dh, stride_dx, n_rows, N,
    BLOCK: tl.constexpr, COMPUTE_DX: tl.constexpr, COMPUTE_DW: tl.constexpr,
    COMPUTE_DB: tl.constexpr, HAS_DH: tl.constexpr, PREFETCH: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.full((BLOCK,), 0.0, tl.float32)
    db_acc = tl.full((BLOCK,), 0.0, tl.float32)
    first = pid.to(tl.int64)
    step = tl.num_programs(0)
    if PREFETCH:  # a row past the end loads nothing: all its columns are masked off
        valid = cols < tl.where(first < n_rows, N, 0)
        x_next = tl.load(X + first * stride_x + cols, mask=valid, other=0.0)
        dy_next = tl.load(DY + first * stride_dy + cols, mask=valid, other=0.0)
    # Each program walks a fixed strided set of rows and keeps fp32 partial sums of dgamma/dbeta;
    # the fixed assignment and a separate reduction stage make the result bitwise reproducible.
    for row in range(first, n_rows, step):
        if PREFETCH:  # the next row's loads are in flight during this row's reductions
            x = x_next.to(tl.float32)
            dy = dy_next.to(tl.float32)
            ahead = row + step
            valid = cols < tl.where(ahead < n_rows, N, 0)
            x_next = tl.load(X + ahead * stride_x + cols, mask=valid, other=0.0)
            dy_next = tl.load(DY + ahead * stride_dy + cols, mask=valid, other=0.0)
        else:
            x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(Mean + row)
        rstd = tl.load(Rstd + row)
        xhat = tl.where(mask, (x - mean) * rstd, 0.0)
        if COMPUTE_DX:
            wdy = w * dy
            c1 = tl.reduce(xhat * wdy, 0, _add) / N
            c2 = tl.reduce(wdy, 0, _add) / N
            dx = (wdy - (xhat * c1 + c2)) * rstd
            if HAS_DH:
                dx += tl.load(DH + row * stride_dh + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        if COMPUTE_DW:
            dw_acc += dy * xhat
        if COMPUTE_DB:
            db_acc += dy
    if COMPUTE_DW:
        tl.store(DW + pid * N + cols, dw_acc, mask=mask)
    if COMPUTE_DB:
        tl.store(DB + pid * N + cols, db_acc, mask=mask)


def layer_norm_forward(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Return (y, h or None, mean, rstd) for `x`, `residual` of shape [rows, hidden] (unit column stride)."""
    n_rows, n = x.shape
    block = block_size(n)
    y = torch.empty((n_rows, n), dtype=out_dtype, device=x.device)
    h = torch.empty_like(x, memory_format=torch.contiguous_format) if residual is not None else None
    mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    if n_rows == 0:
        return y, h, mean, rstd
    r = residual if residual is not None else x
    hh = h if h is not None else x
    flags = {"HAS_RESIDUAL": residual is not None, "HAS_BIAS": bias is not None}
    _layer_norm_fwd[(n_rows,)](
        x, r, hh, y, weight, bias if bias is not None else weight, mean, rstd,
        x.stride(0), r.stride(0), hh.stride(0), y.stride(0), n, eps,
        BLOCK=block, **launch_options(block), **flags,
    )  # fmt: skip
    record_launch(Launch("layer_norm_fwd", (n_rows,), flags))
    return y, h, mean, rstd


def layer_norm_backward(
    dy: torch.Tensor,
    dh: torch.Tensor | None,
    x: torch.Tensor,
    weight: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    x_dtype: torch.dtype,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Return (dx, fp32 dweight, fp32 dbias), each None when not asked for; `dy`, `dh`, `x` are [rows, hidden]."""
    n_rows, n = x.shape
    if not (need_dx or need_dw or need_db):
        return None, None, None
    if n_rows == 0:
        dx = torch.empty_like(x, dtype=x_dtype) if need_dx else None
        zeros = torch.zeros(n, dtype=torch.float32, device=x.device)
        return dx, zeros if need_dw else None, zeros.clone() if need_db else None
    block = block_size(n)
    programs = config.backward_programs(x, n_rows, block)
    buffers: list[str] = []
    dx = torch.empty((n_rows, n), dtype=x_dtype, device=x.device) if need_dx else None
    dw_part = db_part = None
    if need_dx:
        buffers.append("dx")
    if need_dw:
        dw_part = torch.empty((programs, n), dtype=torch.float32, device=x.device)
        buffers.append("dweight_partial")
    if need_db:
        db_part = torch.empty((programs, n), dtype=torch.float32, device=x.device)
        buffers.append("dbias_partial")
    flags = {
        "COMPUTE_DX": need_dx,
        "COMPUTE_DW": need_dw,
        "COMPUTE_DB": need_db,
        "HAS_DH": dh is not None,
        "PREFETCH": config.backward_prefetch(block),
    }
    placeholder = mean  # never read or written: its switch is off
    dh_arg = dh if dh is not None else dy
    _layer_norm_bwd[(programs,)](
        x, weight, mean, rstd, dy, dh_arg,
        dx if dx is not None else placeholder,
        dw_part if dw_part is not None else placeholder,
        db_part if db_part is not None else placeholder,
        x.stride(0), dy.stride(0), dh_arg.stride(0), dx.stride(0) if dx is not None else 0, n_rows, n,
        BLOCK=block, **launch_options(block, backward=True), **flags,
    )  # fmt: skip
    record_launch(Launch("layer_norm_bwd", (programs,), flags, tuple(buffers)))
    # torch's dim reduction has a fixed order (no atomics), so the second stage is deterministic too.
    dw = dw_part.sum(0) if dw_part is not None else None
    db = db_part.sum(0) if db_part is not None else None
    return dx, dw, db
