"""layer_norm / layer_norm_residual: the Triton kernels (interpreted) against an fp64 torch reference."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from medtune.kernels import backend_for, layer_norm, layer_norm_reference, layer_norm_residual, trace_launches

# Tolerances per dtype of the tensor compared; the reference is fp64 on the very same (rounded) inputs,
# so the only errors are the kernel's fp32 arithmetic and one final rounding to the stored dtype:
# - fp32: reductions over <= a few hundred fp32 terms, error ~1e-6 relative;
# - fp16: 11 significant bits, one rounding = 2^-11 ~ 4.9e-4 relative (2e-3 leaves margin for
#   dx's cancellation, whose absolute error scales with the row, not the element);
# - bf16: 8 significant bits and Triton's interpreter rounds fp32->bf16 toward zero (one full ulp,
#   2^-7 ~ 7.8e-3 relative; the GPU rounds to nearest, half that), hence 1e-2.
TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 1e-2, "rtol": 1e-2},
}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _params(hidden: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = (1 + 0.1 * torch.randn(hidden, generator=g)).to(dtype).requires_grad_()
    b = (0.1 * torch.randn(hidden, generator=g)).to(dtype).requires_grad_()
    return w, b


def _fp64_grads(x, w, b, g, eps=1e-5):
    """Return (y, dx, dw, db) from F.layer_norm in fp64 on copies of the inputs."""
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    y = F.layer_norm(xd, (x.shape[-1],), wd, bd, eps)
    y.backward(g.double())
    return y, xd.grad, wd.grad, bd.grad


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual.double(), expected.double(), **TOL[actual.dtype])


def test_cpu_tensors_run_the_interpreted_kernels():
    x = torch.randn(2, 64)
    w, b = _params(64, torch.float32)
    assert backend_for(x) == "interpreter"
    with trace_launches() as launches:
        layer_norm(x, w, b)
    assert [launch.kernel for launch in launches] == ["layer_norm_fwd"]


@pytest.mark.parametrize("shape", [(1, 64), (7, 67), (2, 3, 127), (5, 256)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fp32_params", [True, False])
def test_forward_and_gradients_match_fp64_reference(shape, dtype, fp32_params):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 2 + 0.5).to(dtype).requires_grad_()
    w, b = _params(shape[-1], torch.float32 if fp32_params else dtype)
    g = torch.randn(shape).to(dtype)
    y = layer_norm(x, w, b)
    y.backward(g)
    y_ref, dx_ref, dw_ref, db_ref = _fp64_grads(x, w, b, g)
    assert y.dtype == dtype and x.grad.dtype == dtype and w.grad.dtype == w.dtype
    _close(y, y_ref)
    _close(x.grad, dx_ref)
    _close(w.grad, dw_ref)
    _close(b.grad, db_ref)


@pytest.mark.parametrize("layout", ["column_strided", "row_strided", "transposed"])
def test_non_contiguous_input(layout):
    torch.manual_seed(1)
    if layout == "column_strided":
        x = torch.randn(6, 134)[:, ::2]
    elif layout == "row_strided":
        x = torch.randn(6, 100)[:, :67]
    else:
        x = torch.randn(67, 6).t()
    assert not x.is_contiguous()
    x.requires_grad_()
    w, b = _params(x.shape[-1], torch.float32)
    g = torch.randn(x.shape)
    layer_norm(x, w, b).backward(g)
    y_ref, dx_ref, dw_ref, db_ref = _fp64_grads(x, w, b, g)
    _close(layer_norm(x, w, b), y_ref)
    _close(x.grad, dx_ref)
    _close(w.grad, dw_ref)
    _close(b.grad, db_ref)


def test_wide_rows_beyond_16k():
    torch.manual_seed(2)
    x = torch.randn(2, 16411, requires_grad=True)
    w, b = _params(16411, torch.float32)
    g = torch.randn(2, 16411)
    layer_norm(x, w, b).backward(g)
    _, dx_ref, dw_ref, db_ref = _fp64_grads(x, w, b, g)
    _close(x.grad, dx_ref)
    _close(w.grad, dw_ref)
    _close(b.grad, db_ref)


@pytest.mark.parametrize(
    "needs", [c for c in itertools.product([True, False], repeat=3) if any(c)], ids=lambda c: str(c)
)
def test_backward_computes_only_requested_gradients(needs):
    need_x, need_w, need_b = needs
    torch.manual_seed(3)
    x = torch.randn(9, 67, dtype=torch.bfloat16).requires_grad_(need_x)
    w, b = _params(67, torch.float32)
    w.requires_grad_(need_w)
    b.requires_grad_(need_b)
    g = torch.randn(9, 67, dtype=torch.bfloat16)
    with trace_launches() as launches:
        layer_norm(x, w, b).backward(g)
    bwd = [launch for launch in launches if launch.kernel == "layer_norm_bwd"]
    assert len(bwd) == 1
    assert bwd[0].flags["COMPUTE_DX"] is need_x
    assert bwd[0].flags["COMPUTE_DW"] is need_w
    assert bwd[0].flags["COMPUTE_DB"] is need_b
    # No scratch buffer is even allocated for skipped work.
    expected = {"dx": need_x, "dweight_partial": need_w, "dbias_partial": need_b}
    assert set(bwd[0].buffers) == {name for name, needed in expected.items() if needed}
    _, dx_ref, dw_ref, db_ref = _fp64_grads(x, w, b, g)
    for t, ref, needed in [(x, dx_ref, need_x), (w, dw_ref, need_w), (b, db_ref, need_b)]:
        if needed:
            _close(t.grad, ref)
        else:
            assert t.grad is None


def test_nothing_trainable_launches_no_backward():
    x = torch.randn(3, 64)
    w, b = _params(64, torch.float32)
    w.requires_grad_(False)
    b.requires_grad_(False)
    with trace_launches() as launches:
        y = layer_norm(x, w, b)
    assert y.grad_fn is None
    assert [launch.kernel for launch in launches] == ["layer_norm_fwd"]


def test_gradients_are_bitwise_deterministic():
    torch.manual_seed(4)
    x = torch.randn(37, 96, dtype=torch.bfloat16, requires_grad=True)
    w, b = _params(96, torch.float32)
    g = torch.randn(37, 96, dtype=torch.bfloat16)
    runs = []
    for _ in range(2):
        x.grad = w.grad = b.grad = None
        layer_norm(x, w, b).backward(g)
        runs.append((x.grad.clone(), w.grad.clone(), b.grad.clone()))
    for first, second in zip(*runs):
        assert torch.equal(first, second)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_residual_variant_returns_sum_and_its_gradients(dtype):
    torch.manual_seed(5)
    shape = (2, 5, 67)
    x = torch.randn(shape).to(dtype).requires_grad_()
    r = torch.randn(shape).to(dtype).requires_grad_()
    w, b = _params(67, torch.float32)
    gy, gh = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
    y, h = layer_norm_residual(x, r, w, b)
    ((y.float() * gy.float()).sum() + (h.float() * gh.float()).sum()).backward()
    _close(h, x.detach().double() + r.detach().double())
    # The norm is checked on the h the kernel stored (rounded like torch's own bf16 add).
    hd = h.detach().double().requires_grad_()
    wd, bd = w.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    y_ref = F.layer_norm(hd, (67,), wd, bd, 1e-5)
    (y_ref * gy.double()).sum().backward()
    _close(y, y_ref)
    _close(x.grad, hd.grad + gh.double())
    _close(r.grad, hd.grad + gh.double())
    _close(w.grad, wd.grad)
    _close(b.grad, bd.grad)


def test_without_interpreter_cpu_falls_back_to_torch(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    x = torch.randn(4, 67)
    w, b = _params(67, torch.float32)
    assert backend_for(x) == "torch"
    with trace_launches() as launches:
        y = layer_norm(x, w, b)
    assert launches == []
    torch.testing.assert_close(y, layer_norm_reference(x, w, b))


def test_mismatched_weight_is_a_sentence_naming_it():
    with pytest.raises(ValueError, match=r"weight has shape \(66,\) but x's last dimension is 67"):
        layer_norm(torch.randn(2, 67), torch.ones(66), torch.zeros(67))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for the compiled kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_kernels_on_cuda_match_reference(monkeypatch, dtype):
    monkeypatch.delenv("TRITON_INTERPRET")
    torch.manual_seed(7)
    x = torch.randn(300, 4099, device="cuda").to(dtype).requires_grad_()
    w, b = (p.detach().cuda().requires_grad_() for p in _params(4099, torch.float32))
    g = torch.randn(300, 4099, device="cuda").to(dtype)
    assert backend_for(x) == "triton"
    y = layer_norm(x, w, b)
    y.backward(g)
    y_ref, dx_ref, dw_ref, db_ref = _fp64_grads(x, w, b, g)
    _close(y, y_ref)
    _close(x.grad, dx_ref)
    torch.testing.assert_close(w.grad.double(), dw_ref, atol=1e-3, rtol=1e-4)  # 300-row fp32 sums
    torch.testing.assert_close(b.grad.double(), db_ref, atol=1e-3, rtol=1e-4)
