"""apply_paradigm sets exactly the trainable tensors each method and paradigm call for."""

from __future__ import annotations

import pytest
import torch

from medtune.core_models import build_random
from medtune.tuning.apply import apply_paradigm
from medtune.tuning.errors import UsageError
from medtune.tuning.paradigm import Paradigm

LLM = "model.language_model"


@pytest.fixture
def tiny_llava():
    torch.manual_seed(0)
    return build_random("tiny-llava")


def llm_norm_names(n_layers: int) -> set[str]:
    names = {f"{LLM}.norm.weight"}
    for i in range(n_layers):
        names |= {
            f"{LLM}.layers.{i}.input_layernorm.weight",
            f"{LLM}.layers.{i}.post_attention_layernorm.weight",
        }
    return names


def vision_norm_names(n_layers: int) -> set[str]:
    tower = "model.vision_tower"
    names = {f"{tower}.{n}.{p}" for n in ("pre_layrnorm", "post_layernorm") for p in ("weight", "bias")}
    for i in range(n_layers):
        for n in ("layer_norm1", "layer_norm2"):
            names |= {f"{tower}.encoder.layers.{i}.{n}.{p}" for p in ("weight", "bias")}
    return names


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_ln_trains_exactly_the_llm_norms(tiny_llava):
    tuned = apply_paradigm(tiny_llava, "llava", "ln", Paradigm.parse("F,F,PEFT,F", "llava"))
    expected = llm_norm_names(tiny_llava.config.text_config.num_hidden_layers)
    assert trainable(tuned.model) == expected == tuned.trainable == tuned.peft


def test_ln_on_vision_and_llm_with_trainable_connector_and_head(tiny_llava):
    tuned = apply_paradigm(tiny_llava, "llava", "ln", Paradigm.parse("PEFT,T,PEFT,T", "llava"))
    connector = {n for n, _ in tiny_llava.named_parameters() if n.startswith("model.multi_modal_projector.")}
    head = {"lm_head.weight", f"{LLM}.embed_tokens.weight"}
    norms = llm_norm_names(4) | vision_norm_names(tiny_llava.config.vision_config.num_hidden_layers)
    assert trainable(tuned.model) == norms | connector | head
    assert tuned.peft == norms


def test_ln_keeps_tuned_norms_fp32_in_a_bf16_model(tiny_llava):
    model = tiny_llava.to(torch.bfloat16)
    tuned = apply_paradigm(model, "llava", "ln", Paradigm.parse(None, "llava"))
    dtypes = {n: p.dtype for n, p in tuned.model.named_parameters()}
    assert {dtypes[n] for n in tuned.peft} == {torch.float32}
    assert dtypes[f"{LLM}.layers.0.self_attn.q_proj.weight"] == torch.bfloat16


def test_full_trains_the_whole_llm_group_only(tiny_llava):
    tuned = apply_paradigm(tiny_llava, "llava", "full", Paradigm.parse(None, "llava"))
    expected = {
        n
        for n, _ in tiny_llava.named_parameters()
        if n.startswith(f"{LLM}.") and not n.startswith(f"{LLM}.embed_tokens.")
    }
    assert trainable(tuned.model) == expected


def test_lora_adds_rank4_adapters_on_every_llm_linear(tiny_llava):
    tuned = apply_paradigm(tiny_llava, "llava", "lora", Paradigm.parse(None, "llava"))
    linears = [
        f"{LLM}.layers.{i}.{m}"
        for i in range(4)
        for m in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    ]
    expected = {f"{m}.lora_{ab}.default.weight" for m in linears for ab in "AB"}
    assert trainable(tuned.model) == expected
    a = dict(tuned.model.named_parameters())[f"{LLM}.layers.0.mlp.down_proj.lora_A.default.weight"]
    assert a.shape == (4, tiny_llava.config.text_config.intermediate_size)


def test_counts_add_up(tiny_llava):
    tuned = apply_paradigm(tiny_llava, "llava", "ln", Paradigm.parse(None, "llava"))
    counts = tuned.counts()
    assert counts["total_params"] == sum(p.numel() for p in tiny_llava.parameters())
    assert counts["trainable_params"] == counts["peft_params"] == 9 * 192
    assert sum(g["params"] for g in counts["groups"].values()) == counts["total_params"]
    assert counts["peft_ratio"] == pytest.approx(9 * 192 / counts["groups"]["llm"]["params"])


def test_a_paradigm_without_peft_group_is_refused_for_ln(tiny_llava):
    with pytest.raises(UsageError, match="tunes no group"):
        apply_paradigm(tiny_llava, "llava", "ln", Paradigm.parse("F,T,F,F", "llava"))
