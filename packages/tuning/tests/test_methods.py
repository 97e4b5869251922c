"""Every method on both tiny families: the exact trainable tensors, and a forward + backward that reaches them."""

from __future__ import annotations

import pytest
import torch

from medtune.core_models.model_class import build_model
from medtune.tuning.apply import apply_paradigm
from medtune.tuning.errors import UsageError
from medtune.tuning.methods import MethodOptions
from medtune.tuning.paradigm import Paradigm

LLM = "model.language_model.layers"
METHODS = ("full", "ln", "attention", "ffn", "lora", "prefix")


def wb(prefix: str) -> set[str]:
    return {f"{prefix}.weight", f"{prefix}.bias"}


def expected_llava(method: str, layers: int) -> set[str]:
    """The tensors each method trains in tiny-llava's LLM (paradigm F,F,PEFT,F), written out from its structure."""
    attn = ("q_proj", "k_proj", "v_proj", "o_proj")
    mlp = ("gate_proj", "up_proj", "down_proj")
    per_layer = {
        "ln": lambda i: {f"{LLM}.{i}.input_layernorm.weight", f"{LLM}.{i}.post_attention_layernorm.weight"},
        "attention": lambda i: {f"{LLM}.{i}.self_attn.{p}.weight" for p in attn},
        "ffn": lambda i: {f"{LLM}.{i}.mlp.{p}.weight" for p in mlp},
        "lora": lambda i: {
            f"{LLM}.{i}.{block}.{p}.lora_{ab}.default.weight"
            for block, ps in (("self_attn", attn), ("mlp", mlp))
            for p in ps
            for ab in "AB"
        },
    }
    if method == "prefix":
        enc = "model.language_model.prefix_encoder"
        return {f"{enc}.embedding.weight", *wb(f"{enc}.transform.0"), *wb(f"{enc}.transform.2")}
    names = set().union(*(per_layer[method](i) for i in range(layers)))
    return names | ({"model.language_model.norm.weight"} if method == "ln" else set())


def expected_miss_jtm(method: str, layers: int) -> set[str]:
    """The tensors each method trains in tiny-miss's JTM (paradigm F,PEFT,F), written out from its structure."""
    L = "text_encoder.encoder.layer"
    blocks = ("attention", "crossattention")
    per_layer = {
        "ln": lambda i: set().union(
            *(wb(f"{L}.{i}.{b}.output.LayerNorm") for b in blocks), wb(f"{L}.{i}.output.LayerNorm")
        ),
        "attention": lambda i: set().union(
            *(wb(f"{L}.{i}.{b}.self.{p}") for b in blocks for p in ("query", "key", "value")),
            *(wb(f"{L}.{i}.{b}.output.{p}") for b in blocks for p in ("dense", "LayerNorm")),
        ),
        "ffn": lambda i: wb(f"{L}.{i}.intermediate.dense") | wb(f"{L}.{i}.output.dense"),
        "lora": lambda i: {
            f"{L}.{i}.attention.self.{p}.lora_{ab}.default.weight" for p in ("query", "value") for ab in "AB"
        },
    }
    if method == "prefix":
        enc = "text_encoder.prefix_encoder"
        return {f"{enc}.embedding.weight", *wb(f"{enc}.transform.0"), *wb(f"{enc}.transform.2")}
    names = set().union(*(per_layer[method](i) for i in range(layers)))
    return names | (wb("text_encoder.embeddings.LayerNorm") if method == "ln" else set())


@pytest.mark.parametrize("method", METHODS[1:])
def test_exact_trainable_names_tiny_llava(method):
    model = build_model("tiny-llava")
    tuned = apply_paradigm(model, "llava", method, Paradigm.parse("F,F,PEFT,F", "llava"))
    assert set(tuned.trainable) == expected_llava(method, model.config.text_config.num_hidden_layers)
    assert {n for n, p in tuned.model.named_parameters() if p.requires_grad} == set(tuned.trainable)


@pytest.mark.parametrize("method", METHODS[1:])
def test_exact_trainable_names_tiny_miss(method):
    model = build_model("tiny-miss")
    tuned = apply_paradigm(model, "miss", method, Paradigm.parse("F,PEFT,F", "miss"))
    assert set(tuned.trainable) == expected_miss_jtm(method, model.config.text_config.num_hidden_layers)


def test_ffn_tunes_the_llava_connector_and_attention_does_not():
    ffn = apply_paradigm(build_model("tiny-llava"), "llava", "ffn", Paradigm.parse("F,PEFT,F,F", "llava"))
    assert set(ffn.trainable) == wb("model.multi_modal_projector.linear_1") | wb(
        "model.multi_modal_projector.linear_2"
    )
    with pytest.raises(UsageError, match="finds nothing to tune in group"):
        apply_paradigm(build_model("tiny-llava"), "llava", "attention", Paradigm.parse("F,PEFT,F,F", "llava"))


def test_prefix_refuses_vision_groups():
    with pytest.raises(UsageError, match="prefix tuning is not viable for ViTs"):
        apply_paradigm(build_model("tiny-llava"), "llava", "prefix", Paradigm.parse("PEFT,F,PEFT,F", "llava"))


def test_prefix_tokens_option_sets_the_prefix_length():
    tuned = apply_paradigm(
        build_model("tiny-miss"),
        "miss",
        "prefix",
        Paradigm.parse("T,PEFT,T", "miss"),
        MethodOptions(prefix_tokens=3),
    )
    assert dict(tuned.model.named_parameters())["text_encoder.prefix_encoder.embedding.weight"].shape[0] == 3


def llava_batch(model) -> dict:
    c = model.config
    n = (c.vision_config.image_size // c.vision_config.patch_size) ** 2
    ids = torch.tensor([[1, *[c.image_token_index] * n, 10, 11, 12, 13, 2]] * 2)
    pixels = torch.randn(2, 3, c.vision_config.image_size, c.vision_config.image_size)
    return {
        "input_ids": ids,
        "pixel_values": pixels,
        "attention_mask": torch.ones_like(ids),
        "labels": ids.clone(),
    }


def miss_batch(model) -> dict:
    size = model.config.vision_config.image_size
    ids = torch.tensor([[1, 10, 11, 12, 2], [1, 13, 14, 2, 0]])
    labels = torch.tensor([[1, 20, 21, 2], [1, 22, 2, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "pixel_values": torch.randn(2, 3, size, size),
            "labels": labels}  # fmt: skip


CASES = [("llava", "tiny-llava", "F,T,PEFT,F", llava_batch), ("miss", "tiny-miss", "T,PEFT,PEFT", miss_batch)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("family", "preset", "paradigm", "make_batch"), CASES, ids=["llava", "miss"])
def test_forward_backward_reaches_every_trainable_tensor(family, preset, paradigm, make_batch, method):
    torch.manual_seed(0)
    model = build_model(preset)
    tuned = apply_paradigm(model, family, method, Paradigm.parse(paradigm, family))
    out = tuned.model(**make_batch(tuned.model))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    params = dict(tuned.model.named_parameters())
    # LoRA's A matrices get no gradient at init (B starts at zero), by design of LoRA.
    expect_grad = {n for n in tuned.trainable if ".lora_A." not in n}
    assert {n for n in expect_grad if params[n].grad is None or not params[n].grad.abs().sum() > 0} == set()
    assert all(params[n].grad is None for n in params if n not in tuned.trainable)


@pytest.mark.parametrize(("family", "preset", "paradigm", "make_batch"), CASES, ids=["llava", "miss"])
def test_prefix_changes_the_output(family, preset, paradigm, make_batch):
    torch.manual_seed(0)
    tuned = apply_paradigm(build_model(preset), family, "prefix", Paradigm.parse(paradigm, family))
    batch = make_batch(tuned.model)
    tuned.model.eval()
    before = tuned.model(**batch).loss
    with torch.no_grad():
        for name, p in tuned.model.named_parameters():
            if ".prefix_encoder.transform.2.bias" in name:
                p.add_(torch.randn_like(p))
    assert not torch.allclose(tuned.model(**batch).loss, before)
