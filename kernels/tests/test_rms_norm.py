"""rms_norm / rms_norm_residual: the Triton kernels (interpreted) against an fp64 torch reference."""

from __future__ import annotations

import itertools

import pytest
import torch

from medtune.kernels import backend_for, rms_norm, rms_norm_reference, rms_norm_residual, trace_launches

# Same reasoning as test_layer_norm.py: fp64 reference on the same rounded inputs, so the error is fp32
# arithmetic plus one rounding to the stored dtype (the interpreter rounds bf16 toward zero: 1 ulp).
TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 1e-2, "rtol": 1e-2},
}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _weight(hidden: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (1 + 0.1 * torch.randn(hidden, generator=g)).to(dtype).requires_grad_()


def _fp64(x: torch.Tensor, w: torch.Tensor, eps: float, offset: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (w + offset)


def _fp64_grads(x, w, g, eps=1e-6, offset=0.0):
    """Return (y, dx, dw) of RMSNorm computed in fp64 on copies of the inputs."""
    xd, wd = (t.detach().double().requires_grad_() for t in (x, w))
    y = _fp64(xd, wd, eps, offset)
    y.backward(g.double())
    return y, xd.grad, wd.grad


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual.double(), expected.double(), **TOL[actual.dtype])


@pytest.mark.parametrize("shape", [(1, 64), (7, 67), (2, 3, 127), (5, 256)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fp32_weight", [True, False])
def test_forward_and_gradients_match_fp64_reference(shape, dtype, fp32_weight):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 2 + 0.3).to(dtype).requires_grad_()
    w = _weight(shape[-1], torch.float32 if fp32_weight else dtype)
    g = torch.randn(shape).to(dtype)
    y = rms_norm(x, w)
    y.backward(g)
    y_ref, dx_ref, dw_ref = _fp64_grads(x, w, g)
    assert y.dtype == dtype and x.grad.dtype == dtype and w.grad.dtype == w.dtype
    _close(y, y_ref)
    _close(x.grad, dx_ref)
    _close(w.grad, dw_ref)


def test_gemma_offset_scales_by_one_plus_weight():
    torch.manual_seed(1)
    x = torch.randn(5, 67, requires_grad=True)
    w = (0.1 * torch.randn(67)).requires_grad_()  # Gemma stores w near 0 and uses 1 + w
    g = torch.randn(5, 67)
    y = rms_norm(x, w, eps=1e-6, offset=1.0)
    y.backward(g)
    y_ref, dx_ref, dw_ref = _fp64_grads(x, w, g, offset=1.0)
    _close(y, y_ref)
    _close(x.grad, dx_ref)
    _close(w.grad, dw_ref)


@pytest.mark.parametrize("layout", ["column_strided", "row_strided", "transposed"])
def test_non_contiguous_input(layout):
    torch.manual_seed(2)
    x = {
        "column_strided": lambda: torch.randn(6, 134)[:, ::2],
        "row_strided": lambda: torch.randn(6, 100)[:, :67],
        "transposed": lambda: torch.randn(67, 6).t(),
    }[layout]()
    assert not x.is_contiguous()
    x.requires_grad_()
    w = _weight(67, torch.float32)
    g = torch.randn(x.shape)
    y = rms_norm(x, w)
    y.backward(g)
    y_ref, dx_ref, dw_ref = _fp64_grads(x, w, g)
    _close(y, y_ref)
    _close(x.grad, dx_ref)
    _close(w.grad, dw_ref)


def test_wide_rows_beyond_16k():
    torch.manual_seed(3)
    x = torch.randn(2, 16411, requires_grad=True)
    w = _weight(16411, torch.float32)
    g = torch.randn(2, 16411)
    rms_norm(x, w).backward(g)
    _, dx_ref, dw_ref = _fp64_grads(x, w, g)
    _close(x.grad, dx_ref)
    _close(w.grad, dw_ref)


@pytest.mark.parametrize("needs", [c for c in itertools.product([True, False], repeat=2) if any(c)], ids=str)
def test_backward_computes_only_requested_gradients(needs):
    need_x, need_w = needs
    torch.manual_seed(4)
    x = torch.randn(9, 67, dtype=torch.bfloat16).requires_grad_(need_x)
    w = _weight(67, torch.float32).requires_grad_(need_w)
    g = torch.randn(9, 67, dtype=torch.bfloat16)
    with trace_launches() as launches:
        rms_norm(x, w).backward(g)
    (bwd,) = [launch for launch in launches if launch.kernel == "rms_norm_bwd"]
    assert bwd.flags["COMPUTE_DX"] is need_x and bwd.flags["COMPUTE_DW"] is need_w
    assert set(bwd.buffers) == {n for n, k in [("dx", need_x), ("dweight_partial", need_w)] if k}
    _, dx_ref, dw_ref = _fp64_grads(x, w, g)
    for t, ref, needed in [(x, dx_ref, need_x), (w, dw_ref, need_w)]:
        if needed:
            _close(t.grad, ref)
        else:
            assert t.grad is None


def test_gradients_are_bitwise_deterministic():
    torch.manual_seed(5)
    x = torch.randn(37, 96, dtype=torch.bfloat16, requires_grad=True)
    w = _weight(96, torch.float32)
    g = torch.randn(37, 96, dtype=torch.bfloat16)
    runs = []
    for _ in range(2):
        x.grad = w.grad = None
        rms_norm(x, w).backward(g)
        runs.append((x.grad.clone(), w.grad.clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("use_h", [True, False])
def test_residual_variant_returns_sum_and_its_gradients(dtype, use_h):
    torch.manual_seed(6)
    shape = (2, 5, 67)
    x = torch.randn(shape).to(dtype).requires_grad_()
    r = torch.randn(shape).to(dtype).requires_grad_()
    w = _weight(67, torch.float32)
    gy, gh = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
    y, h = rms_norm_residual(x, r, w)
    loss = (y.float() * gy.float()).sum()
    if use_h:  # the next block adds h back in; when it does not, no zero gradient is read for h
        loss = loss + (h.float() * gh.float()).sum()
    loss.backward()
    _close(h, x.detach().double() + r.detach().double())
    hd = h.detach().double().requires_grad_()
    wd = w.detach().double().requires_grad_()
    y_ref = _fp64(hd, wd, 1e-6, 0.0)
    (y_ref * gy.double()).sum().backward()
    dh_ref = hd.grad + (gh.double() if use_h else 0)
    _close(y, y_ref)
    _close(x.grad, dh_ref)
    _close(r.grad, dh_ref)
    _close(w.grad, wd.grad)


def test_residual_variant_with_frozen_inputs_skips_dx():
    x, r = torch.randn(4, 64), torch.randn(4, 64)
    w = _weight(64, torch.float32)
    with trace_launches() as launches:
        y, _ = rms_norm_residual(x, r, w)
        y.sum().backward()
    (bwd,) = [launch for launch in launches if launch.kernel == "rms_norm_bwd"]
    assert bwd.buffers == ("dweight_partial",)


def test_without_interpreter_cpu_falls_back_to_torch(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    x = torch.randn(4, 67)
    w = _weight(67, torch.float32)
    assert backend_for(x) == "torch"
    with trace_launches() as launches:
        y = rms_norm(x, w)
    assert launches == []
    torch.testing.assert_close(y, rms_norm_reference(x, w))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for the compiled kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_kernels_on_cuda_match_reference(monkeypatch, dtype):
    monkeypatch.delenv("TRITON_INTERPRET")
    torch.manual_seed(7)
    x = torch.randn(300, 4099, device="cuda").to(dtype).requires_grad_()
    w = _weight(4099, torch.float32).detach().cuda().requires_grad_()
    g = torch.randn(300, 4099, device="cuda").to(dtype)
    assert backend_for(x) == "triton"
    y = rms_norm(x, w)
    y.backward(g)
    y_ref, dx_ref, dw_ref = _fp64_grads(x, w, g)
    _close(y, y_ref)
    _close(x.grad, dx_ref)
    torch.testing.assert_close(w.grad.double(), dw_ref, atol=1e-3, rtol=1e-4)  # 300-row fp32 sums
