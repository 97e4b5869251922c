"""The compiled kernels on a CUDA GPU: model-sized shapes, every gradient switch, determinism, int64 offsets.

Skipped without a GPU. `MEDTUNE_KERNELS_DRY_RUN=1` runs the same tests on the CPU through Triton's
interpreter at small shapes, which checks the tests themselves on a machine without a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from medtune.kernels import (
    backend_for,
    layer_norm,
    layer_norm_residual,
    patch_norms,
    rms_norm,
    rms_norm_residual,
    trace_launches,
)
from medtune.kernels._triton import config

CUDA = torch.cuda.is_available()
DRY_RUN = not CUDA and os.environ.get("MEDTUNE_KERNELS_DRY_RUN") == "1"
DEVICE = "cuda" if CUDA else "cpu"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (CUDA or DRY_RUN), reason="needs a CUDA device for the compiled kernels"),
]

# Model widths (CLIP/BERT 768, LLaMA-7B 4096, 13B 5120, 70B 8192, the widest supported 16384) and
# awkward ones (64, prime 4099); the dry run keeps the interpreter fast.
HIDDEN = (64, 768, 4099, 5120, 8192, 16384) if CUDA else (64, 67, 130)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Against an fp64 reference on the same rounded inputs: fp32 arithmetic in the kernel (tl.sqrt is
# approximate, FMA contraction is on) and one rounding to the stored dtype (half an ulp on the GPU).
TOL = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 1.6e-2, "rtol": 1e-2},
}
OPS = ("layer_norm", "rms_norm")


@pytest.fixture(autouse=True)
def _compiled(_triton_interpreter, monkeypatch: pytest.MonkeyPatch) -> None:
    if CUDA:  # the conftest asks for the interpreter; these tests are about the compiled kernels
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _rows(n: int) -> int:
    return n if CUDA else min(n, 13)


def _inputs(op: str, rows: int, hidden: int, dtype: torch.dtype, param_dtype=torch.float32, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    x = (torch.randn(rows, hidden, device=DEVICE, generator=g) * 2 + 0.5).to(dtype).requires_grad_()
    w = (1 + 0.1 * torch.randn(hidden, device=DEVICE, generator=g)).to(param_dtype).requires_grad_()
    b = None
    if op == "layer_norm":
        b = (0.1 * torch.randn(hidden, device=DEVICE, generator=g)).to(param_dtype).requires_grad_()
    dy = torch.randn(rows, hidden, device=DEVICE, generator=g).to(dtype)
    return x, w, b, dy


def _run(op: str, x, w, b):
    return layer_norm(x, w, b) if op == "layer_norm" else rms_norm(x, w)


def _reference(op: str, x, w, b, dy):
    """Return (y, dx, dw, db or None) computed in fp64 on copies of the inputs."""
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    bd = b.detach().double().requires_grad_() if b is not None else None
    if op == "layer_norm":
        y = F.layer_norm(xd, (x.shape[-1],), wd, bd, 1e-5)
    else:
        y = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6) * wd
    y.backward(dy.double())
    return y.detach(), xd.grad, wd.grad, bd.grad if bd is not None else None


def _close(actual: torch.Tensor, expected: torch.Tensor, msg: str = "") -> None:
    torch.testing.assert_close(actual.double(), expected, **TOL[actual.dtype], msg=msg or None)


def _close_param_grad(actual: torch.Tensor, expected: torch.Tensor, terms: torch.Tensor) -> None:
    # A dgamma/dbeta entry sums one term per row; fp32 summation error grows with the sum of |terms|.
    atol = 1e-5 * terms.abs().sum(0).max().item() + 1e-6
    torch.testing.assert_close(actual.double(), expected, atol=atol, rtol=1e-4)


def test_the_compiled_kernels_run():
    x = torch.randn(4, 64, device=DEVICE)
    assert backend_for(x) == ("triton" if CUDA else "interpreter")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_forward_and_every_gradient_match_fp64(op, hidden, dtype):
    x, w, b, dy = _inputs(op, _rows(1024) + 3, hidden, dtype)
    y = _run(op, x, w, b)
    y.backward(dy)
    y_ref, dx_ref, dw_ref, db_ref = _reference(op, x, w, b, dy)
    assert y.dtype == dtype and x.grad.dtype == dtype and w.grad.dtype == torch.float32
    _close(y, y_ref, "y")
    _close(x.grad, dx_ref, "dx")
    _close_param_grad(w.grad, dw_ref, dy.double() * (y_ref - (b.double() if b is not None else 0)))
    if b is not None:
        _close_param_grad(b.grad, db_ref, dy.double())


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_parameters(op, dtype):
    x, w, b, dy = _inputs(op, _rows(512), 4096 if CUDA else 67, dtype, param_dtype=dtype)
    y = _run(op, x, w, b)
    y.backward(dy)
    y_ref, dx_ref, _, _ = _reference(op, x, w, b, dy)
    assert w.grad.dtype == dtype
    _close(y, y_ref)
    _close(x.grad, dx_ref)


@pytest.mark.parametrize("op", OPS)
def test_many_rows_are_all_counted_by_the_strided_backward(op):
    # 32k rows over a few hundred programs: each walks ~100 rows; a row skipped or counted twice
    # would show in dgamma/dbeta, and the last rows' dx shows the loop reaches the end.
    hidden = 4096 if CUDA else 130
    x, w, b, dy = _inputs(op, _rows(32768) + 5, hidden, torch.bfloat16)
    with trace_launches() as launches:
        y = _run(op, x, w, b)
        y.backward(dy)
    (bwd,) = [launch for launch in launches if launch.kernel.endswith("_bwd")]
    assert bwd.grid[0] < x.shape[0]
    y_ref, dx_ref, dw_ref, db_ref = _reference(op, x, w, b, dy)
    _close(x.grad[-8:], dx_ref[-8:])
    _close_param_grad(w.grad, dw_ref, dy.double() * (y_ref - (b.double() if b is not None else 0)))
    if b is not None:
        _close_param_grad(b.grad, db_ref, dy.double())


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("need_x", "need_w"), [(True, True), (True, False), (False, True)])
def test_backward_launches_only_the_requested_work(op, need_x, need_w):
    x, w, b, dy = _inputs(op, _rows(300), 4096 if CUDA else 67, torch.bfloat16)
    x.requires_grad_(need_x)
    w.requires_grad_(need_w)
    if b is not None:
        b.requires_grad_(need_w)
    with trace_launches() as launches:
        _run(op, x, w, b).backward(dy)
    (bwd,) = [launch for launch in launches if launch.kernel.endswith("_bwd")]
    assert bwd.flags["COMPUTE_DX"] is need_x and bwd.flags["COMPUTE_DW"] is need_w
    assert ("dx" in bwd.buffers) is need_x and ("dweight_partial" in bwd.buffers) is need_w
    assert (x.grad is not None) is need_x and (w.grad is not None) is need_w
    _, dx_ref, dw_ref, _ = _reference(op, x, w, b, dy)
    if need_x:
        _close(x.grad, dx_ref)
    if need_w:
        torch.testing.assert_close(w.grad.double(), dw_ref, atol=0.05, rtol=1e-3)


@pytest.mark.parametrize("op", OPS)
def test_gradients_are_bitwise_identical_across_runs(op):
    x, w, b, dy = _inputs(op, _rows(8192) + 1, 4096 if CUDA else 130, torch.bfloat16)
    grads = []
    for _ in range(3):
        for t in (x, w, b):
            if t is not None:
                t.grad = None
        _run(op, x, w, b).backward(dy)
        grads.append([t.grad.clone() for t in (x, w, b) if t is not None])
    for again in grads[1:]:
        assert all(torch.equal(a, c) for a, c in zip(grads[0], again))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_residual_variant_matches_add_then_norm(op, dtype):
    x, w, b, dy = _inputs(op, _rows(777), 4096 if CUDA else 67, dtype)
    r = torch.randn(x.shape, device=DEVICE).to(dtype).requires_grad_()
    dh = torch.randn(x.shape, device=DEVICE).to(dtype)
    y, h = layer_norm_residual(x, r, w, b) if op == "layer_norm" else rms_norm_residual(x, r, w)
    torch.autograd.backward([y, h], [dy, dh])
    h_expected = (x.detach().float() + r.detach().float()).to(dtype)
    if CUDA:  # the GPU rounds h to nearest, as torch does
        assert torch.equal(h, h_expected)
    else:  # Triton's interpreter rounds fp32 -> bf16 toward zero: one ulp
        torch.testing.assert_close(h, h_expected, atol=0, rtol=2**-7)
    y_ref, dh_ref, _, _ = _reference(op, h_expected, w, b, dy)
    _close(y, y_ref)
    # h = x + r, so both receive the gradient through the norm plus the one given to h itself.
    _close(x.grad, dh_ref + dh.double())
    assert torch.equal(x.grad, r.grad)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("rows", [2, 1027])
def test_prefetching_backward_matches_fp64(op, dtype, rows, monkeypatch):
    # Each program loads its next row before reducing the current one; the last prefetch of every
    # program runs past the end (masked), and 2 rows leave most programs with nothing but that.
    monkeypatch.setattr(config, "backward_prefetch", lambda block: True)
    x, w, b, dy = _inputs(op, _rows(rows), 4096 if CUDA else 67, dtype)
    r = torch.randn(x.shape, device=DEVICE).to(dtype).requires_grad_()
    dh = torch.randn(x.shape, device=DEVICE).to(dtype)
    with trace_launches() as launches:
        y, h = layer_norm_residual(x, r, w, b) if op == "layer_norm" else rms_norm_residual(x, r, w)
        torch.autograd.backward([y, h], [dy, dh])
    assert [launch.flags["PREFETCH"] for launch in launches if launch.kernel.endswith("_bwd")] == [True]
    y_ref, dx_ref, dw_ref, db_ref = _reference(op, h.detach(), w, b, dy)
    _close(x.grad, dx_ref + dh.double(), "dx")
    _close_param_grad(w.grad, dw_ref, dy.double() * (y_ref - (b.double() if b is not None else 0)))
    if b is not None:
        _close_param_grad(b.grad, db_ref, dy.double())


@pytest.mark.skipif(not CUDA, reason="2**31 elements: a GPU-sized check")
@pytest.mark.parametrize("op", OPS)
def test_row_offsets_beyond_int32(op):
    # 524,352 rows x 4096 = 2.15e9 elements: an int32 row offset would wrap and read another row.
    hidden = 4096
    rows = 2**31 // hidden + 64
    x, w, b, dy = _inputs(op, rows, hidden, torch.bfloat16)
    y = _run(op, x, w, b)
    y.backward(dy)
    tail = slice(rows - 4, rows)
    y_ref, dx_ref, _, _ = _reference(op, x[tail], w, b, dy[tail])
    _close(y[tail], y_ref)
    _close(x.grad[tail], dx_ref)
    del x, y, dy
    torch.cuda.empty_cache()


@pytest.mark.parametrize("family", ["llava", "blip"])
def test_patched_model_on_the_device_gives_the_same_ln_tuning_gradients(tiny_model, family):
    model, batch = tiny_model(family)
    model.to(DEVICE)
    batch = {k: v.to(DEVICE) for k, v in batch.items()}
    norms = {n for n, _ in model.named_parameters() if "norm" in n.lower()}
    for name, p in model.named_parameters():
        p.requires_grad_(name in norms)

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref_loss, ref_grads = loss_and_grads()
    with patch_norms(model) as handle, trace_launches() as launches:
        assert handle.skipped == []
        loss, grads = loss_and_grads()
    assert any(launch.kernel.endswith("_bwd") for launch in launches)
    torch.testing.assert_close(loss, ref_loss, atol=1e-4, rtol=1e-4)
    assert grads.keys() == ref_grads.keys() and grads
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-4, rtol=1e-4, msg=name)
