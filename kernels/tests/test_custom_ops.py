"""The norms under torch.compile: one custom-op node each (no graph break), the eager Functions' numbers, and
the same skipped gradients. Reference: the eager autograd Functions, which test_layer_norm.py / test_rms_norm.py
check against fp64; tolerance fp32 rounding (the very same kernels run on both paths)."""

from __future__ import annotations

import pytest
import torch

from medtune.kernels import (
    FusedLayerNorm,
    FusedRMSNorm,
    layer_norm,
    layer_norm_residual,
    rms_norm,
    rms_norm_residual,
    trace_launches,
)
from medtune.kernels._library import layer_norm_bwd, layer_norm_fwd, rms_norm_bwd, rms_norm_fwd

TOL = {"atol": 1e-5, "rtol": 1e-5}
HIDDEN = 24  # not a power of two: the kernels mask the tail of the block


def _inputs(x_grad: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, HIDDEN, generator=g).requires_grad_(x_grad)
    r = torch.randn(3, 5, HIDDEN, generator=g).requires_grad_(x_grad)
    w = (1 + 0.1 * torch.randn(HIDDEN, generator=g)).requires_grad_()
    b = (0.1 * torch.randn(HIDDEN, generator=g)).requires_grad_()
    return x, r, w, b


CASES = {
    "rms_norm": lambda x, r, w, b: rms_norm(x, w, 1e-6),
    "rms_norm_gemma_offset": lambda x, r, w, b: rms_norm(x, w, 1e-6, 1.0),
    "rms_norm_residual": lambda x, r, w, b: sum(t.pow(2) for t in rms_norm_residual(x, r, w, 1e-6)),
    "layer_norm": lambda x, r, w, b: layer_norm(x, w, b, 1e-5),
    "layer_norm_no_bias": lambda x, r, w, b: layer_norm(x, w, None, 1e-5),
    "layer_norm_residual": lambda x, r, w, b: sum(t.pow(2) for t in layer_norm_residual(x, r, w, b, 1e-5)),
}


def _grads(fn, x_grad: bool):
    x, r, w, b = _inputs(x_grad)
    with trace_launches() as launches:
        out = fn(x, r, w, b)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    leaves = (x, r, w, b)
    return out.detach(), [t.grad for t in leaves], launches


@pytest.mark.parametrize("x_grad", [True, False], ids=["full-backward", "ln-tuning"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_graph_matches_eager_and_runs_the_kernels(case, x_grad):
    torch._dynamo.reset()
    eager_out, eager_grads, eager_launches = _grads(CASES[case], x_grad)
    compiled = torch.compile(CASES[case], fullgraph=True, backend="aot_eager")  # fullgraph: a break fails
    out, grads, launches = _grads(compiled, x_grad)
    torch.testing.assert_close(out, eager_out, **TOL)
    for got, want in zip(grads, eager_grads):
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want, **TOL)
    # The compiled graph launched the same Triton kernels with the same switches: nothing ran through torch's
    # reference instead, and LN-tuning's backward still skips dx.
    assert [(a.kernel, a.flags) for a in launches] == [(a.kernel, a.flags) for a in eager_launches]
    backward = next(a for a in launches if a.kernel.endswith("_bwd"))
    assert backward.flags["COMPUTE_DX"] is x_grad


@pytest.mark.parametrize("module", ["rms", "layer"])
def test_a_patched_module_compiles_without_graph_breaks(module):
    torch._dynamo.reset()
    norm = FusedRMSNorm(HIDDEN) if module == "rms" else FusedLayerNorm(HIDDEN)
    block = torch.nn.Sequential(torch.nn.Linear(HIDDEN, HIDDEN), norm, torch.nn.Linear(HIDDEN, 4))
    for p in block.parameters():
        p.requires_grad_(False)
    norm.weight.requires_grad_(True)  # LN-tuning: only the norm's scale trains
    x = torch.randn(2, 7, HIDDEN)
    explanation = torch._dynamo.explain(block)(x)
    assert explanation.graph_break_count == 0
    torch.compile(block, fullgraph=True, backend="aot_eager")(x).sum().backward()
    compiled_grad = norm.weight.grad.clone()
    norm.weight.grad = None
    block(x).sum().backward()
    torch.testing.assert_close(compiled_grad, norm.weight.grad, **TOL)


@pytest.mark.parametrize(
    ("op", "args"),
    [
        (rms_norm_fwd, lambda x, r, w, b: (x, r, w, 1e-6, 0.0, torch.float32)),
        (rms_norm_fwd, lambda x, r, w, b: (x, None, w, 1e-6, 1.0, torch.float32)),
        (layer_norm_fwd, lambda x, r, w, b: (x, r, w, b, 1e-5, torch.float32)),
        (layer_norm_fwd, lambda x, r, w, b: (x, None, w, None, 1e-5, torch.float32)),
    ],
    ids=["rms+residual", "rms", "layer+residual+bias", "layer"],
)
def test_custom_ops_pass_torch_library_opcheck(op, args):
    x, r, w, b = _inputs(x_grad=True)
    torch.library.opcheck(op, args(x, r, w, b))


def test_backward_ops_return_empty_tensors_for_gradients_not_asked_for():
    x, _, w, b = _inputs(x_grad=False)
    dy = torch.ones_like(x)
    _, _, rstd = rms_norm_fwd(x, None, w, 1e-6, 0.0, torch.float32)
    dx, dw = rms_norm_bwd(dy, None, x, w, rstd, 0.0, False, True)
    assert dx.numel() == 0 and dw.shape == (HIDDEN,)
    _, _, mean, rstd = layer_norm_fwd(x, None, w, b, 1e-5, torch.float32)
    dx, dw, db = layer_norm_bwd(dy, None, x, w, mean, rstd, False, True, False)
    assert dx.numel() == 0 and dw.shape == (HIDDEN,) and db.numel() == 0
