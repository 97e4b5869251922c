"""FusedLayerNorm / FusedRMSNorm and patch_norms on tiny real transformers models (LLaVA, BLIP-VQA)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from medtune.kernels import FusedLayerNorm, FusedRMSNorm, patch_norms, trace_launches

# Whole-model comparisons in fp32: the fused norms differ from torch's only in fp32 summation order
# (~1e-7 relative per norm); a few layers of attention/MLP amplify that to well under 1e-4.
MODEL_TOL = {"atol": 1e-4, "rtol": 1e-4}


def _norm_params(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if "norm" in n.lower()}


def _loss_and_grads(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["llava", "blip"])
@pytest.mark.parametrize("ln_tuning", [True, False], ids=["ln_tuning", "full"])
def test_patched_model_gives_same_loss_and_gradients(tiny_model, family, ln_tuning):
    model, batch = tiny_model(family)
    if ln_tuning:  # only gamma/beta train; the gradient must still flow through every frozen layer
        for name, p in model.named_parameters():
            p.requires_grad_(name in _norm_params(model))
    ref_loss, ref_grads = _loss_and_grads(model, batch)
    originals = {n: m for n, m in model.named_modules() if "Norm" in type(m).__name__}
    state_keys = list(model.state_dict())

    with patch_norms(model) as handle, trace_launches() as launches:
        assert sorted(handle.patched) == sorted(originals)
        assert handle.skipped == []
        assert list(model.state_dict()) == state_keys
        loss, grads = _loss_and_grads(model, batch)

    assert any(launch.kernel.endswith("_bwd") for launch in launches)  # the kernels really ran
    torch.testing.assert_close(loss, ref_loss, **MODEL_TOL)
    assert grads.keys() == ref_grads.keys()
    if ln_tuning:  # (LLaVA reads the vision tower's second-to-last layer: later norms get no grad)
        assert grads and grads.keys() <= _norm_params(model).keys()
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], **MODEL_TOL, msg=name)
    # restore gave back the very same module objects
    after = {n: m for n, m in model.named_modules() if "Norm" in type(m).__name__}
    assert after.keys() == originals.keys()
    assert all(after[n] is originals[n] for n in originals)


def test_fused_modules_share_the_original_parameters():
    ln, rms = nn.LayerNorm(48, eps=1e-6), LlamaRMSNorm(48, eps=1e-5)
    ln.weight.requires_grad_(False)
    fused_ln, fused_rms = FusedLayerNorm.from_module(ln), FusedRMSNorm.from_module(rms)
    assert fused_ln.weight is ln.weight and fused_ln.bias is ln.bias and fused_ln.eps == 1e-6
    assert fused_rms.weight is rms.weight and fused_rms.eps == 1e-5
    assert list(fused_ln.state_dict()) == list(ln.state_dict())
    assert list(fused_rms.state_dict()) == list(rms.state_dict())
    assert not fused_ln.weight.requires_grad


@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.bfloat16])
def test_fused_rms_matches_llama_rms_norm_numerics_and_dtype(weight_dtype):
    # LlamaRMSNorm rounds the normalised input to bf16 before scaling: bf16 tolerance (1e-2, see
    # test_rms_norm.py) covers that extra rounding.
    torch.manual_seed(0)
    llama = LlamaRMSNorm(67).to(weight_dtype)
    with torch.no_grad():
        llama.weight.mul_(torch.rand(67).to(weight_dtype) + 0.5)
    x = torch.randn(3, 67).to(torch.bfloat16)
    fused = FusedRMSNorm.from_module(llama)
    expected, actual = llama(x), fused(x)
    assert actual.dtype == expected.dtype  # fp32 weight * bf16 x -> fp32, as in transformers
    torch.testing.assert_close(actual.float(), expected.float(), atol=1e-2, rtol=1e-2)


def test_gemma_norm_gets_offset_one():
    torch.manual_seed(0)
    gemma = GemmaRMSNorm(64)
    with torch.no_grad():
        gemma.weight.normal_(0, 0.1)
    fused = FusedRMSNorm.from_module(gemma)
    x = torch.randn(2, 64)
    assert fused.offset == 1.0
    torch.testing.assert_close(fused(x), gemma(x), atol=1e-5, rtol=1e-5)


class _ScaledRMSNorm(nn.Module):
    """Looks like an RMSNorm to duck typing but scales by 2 * w: the probe must catch it."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = 1e-6

    def forward(self, x):
        return 2 * self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


_ScaledRMSNorm.__name__ = "ScaledRMSNorm"


def test_unsupported_norms_are_left_alone_with_reasons():
    hooked = nn.LayerNorm(16)
    hooked.register_forward_hook(lambda *args: None)
    model = nn.ModuleDict(
        {
            "plain": nn.LayerNorm(16),
            "no_affine": nn.LayerNorm(16, elementwise_affine=False),
            "two_dims": nn.LayerNorm((4, 4)),
            "group": nn.GroupNorm(2, 16),
            "hooked": hooked,
            "scaled": _ScaledRMSNorm(16),
            "linear": nn.Linear(16, 16),
        }
    )
    handle = patch_norms(model)
    assert handle.patched == ["plain"]
    reasons = dict(handle.skipped)
    assert reasons.keys() == {"no_affine", "two_dims", "group", "hooked", "scaled"}
    assert "elementwise_affine=False" in reasons["no_affine"]
    assert "2 trailing dimensions" in reasons["two_dims"]
    assert "forward hooks" in reasons["hooked"]
    assert "differs" in reasons["scaled"]
    assert isinstance(model["plain"], FusedLayerNorm) and model["hooked"] is hooked
    assert "patched 1 norm(s) (LayerNorm -> FusedLayerNorm x1)" in handle.summary()
    handle.restore()
    assert type(model["plain"]) is nn.LayerNorm


def test_patch_touches_only_this_instance_and_shared_norms_once():
    shared = nn.LayerNorm(8)
    model = nn.Sequential(shared, nn.Linear(8, 8), shared)
    other = nn.Sequential(nn.LayerNorm(8))
    handle = patch_norms(model)
    assert handle.patched == ["0", "2"]
    assert model[0] is model[2]  # still one module, so still one set of parameters
    assert type(other[0]) is nn.LayerNorm and nn.LayerNorm.forward is not FusedLayerNorm.forward
    handle.restore()
    assert model[0] is shared and model[2] is shared


def _saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Return the bytes autograd keeps for the backward of module(x), its own parameters aside."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(storages.values())


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm"])
def test_forward_keeps_only_its_input_and_fp32_row_statistics(kind):
    # LN-tuning without checkpointing keeps every norm's saved tensors until backward: the fused norm
    # keeps x (bf16 here) and 4 bytes per row per statistic; eager LlamaRMSNorm keeps an fp32 copy of x
    # and a bf16 normalised x instead, 6 bytes per element.
    rows, hidden = 96, 256
    x = torch.randn(2, rows // 2, hidden, dtype=torch.bfloat16, requires_grad=True)
    if kind == "layer_norm":
        fused, stats = FusedLayerNorm.from_module(nn.LayerNorm(hidden)), 2  # mean and rstd
    else:
        eager = LlamaRMSNorm(hidden)  # fp32 weight, bf16 activations: LN-tuning's setting
        fused, stats = FusedRMSNorm.from_module(eager), 1  # rstd
        assert _saved_bytes(eager, x) == 6 * rows * hidden + 4 * rows
    assert _saved_bytes(fused, x) == 2 * rows * hidden + stats * 4 * rows
