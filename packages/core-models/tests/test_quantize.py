"""NF4 frozen weights on the CPU backend: what gets quantised, output close to fp32, LN-tuning still learns."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from medtune.core_models.model_class import build_model
from medtune.core_models.quantize import QuantizationUnavailable, quantize_frozen

bnb = pytest.importorskip("bitsandbytes")


def batch(model):
    c = model.config
    n = (c.vision_config.image_size // c.vision_config.patch_size) ** 2
    ids = torch.tensor([[1, *[c.image_token_index] * n, 10, 11, 12, 13, 2]] * 2)
    pixels = torch.randn(2, 3, c.vision_config.image_size, c.vision_config.image_size)
    return {"input_ids": ids, "pixel_values": pixels, "labels": ids.clone()}


def norm_names(model) -> set[str]:
    return {
        f"{m}.{p}"
        for m, mod in model.named_modules()
        if type(mod).__name__.endswith(("RMSNorm", "LayerNorm"))
        for p, _ in mod.named_parameters(recurse=False)
    }


def test_frozen_linears_become_nf4_and_trainable_ones_stay():
    torch.manual_seed(0)
    model = build_model("tiny-llava")
    keep = {"model.language_model.layers.0.self_attn.q_proj.weight"}
    report = quantize_frozen(model, keep)
    linears = [n for n, m in build_model("tiny-llava").named_modules() if type(m) is nn.Linear]
    assert set(report.quantized) == set(linears) - {
        "lm_head",
        "model.language_model.layers.0.self_attn.q_proj",
    }
    assert report.kept == {
        "model.language_model.layers.0.self_attn.q_proj": "trainable",
        "lm_head": "output head",
    }
    q = model.get_submodule("model.language_model.layers.1.mlp.up_proj")
    assert isinstance(q, bnb.nn.Linear4bit) and q.weight.quant_state.quant_type == "nf4"
    assert q.weight.quant_state.nested  # double quantisation
    assert type(model.get_submodule("model.language_model.layers.0.self_attn.q_proj")) is nn.Linear


def test_4bit_loss_close_to_full_precision_and_ln_tuning_lowers_it():
    torch.manual_seed(0)
    reference = build_model("tiny-llava")
    model = build_model("tiny-llava")
    model.load_state_dict(reference.state_dict())
    inputs = batch(model)
    with torch.no_grad():
        full = reference(**inputs)
    norms = norm_names(model)
    quantize_frozen(model, norms)
    for name, p in model.named_parameters():
        p.requires_grad_(name in norms)
    out = model(**inputs)
    # Reference: the fp32 model; NF4 rounding moves the loss by well under 2%.
    assert abs(out.loss.item() - full.loss.item()) < 0.02 * full.loss.item()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(6):
        loss = model(**inputs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n in norms)


def test_missing_bitsandbytes_is_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(QuantizationUnavailable, match="--4bit needs bitsandbytes"):
        quantize_frozen(build_model("tiny-llava"), set())


def test_meta_model_is_refused():
    with pytest.raises(ValueError, match="meta device"):
        quantize_frozen(build_model("tiny-llava", device="meta"), set())
