"""The vlm family: group rules per architecture, real-shape presets, tiny checkpoints and bad checkpoints."""

from __future__ import annotations

import json
import re

import pytest

from medtune.core_models import CheckpointError, default_preset, group_of, load
from medtune.core_models.groups import VLM_GROUP_PREFIXES
from medtune.core_models.model_class import build_model
from medtune.core_models.vlm import RULES, rule_for
from medtune.core_models.vlm_tiny import write_tiny_vlm

TINY = {
    "tiny-gemma3": "Gemma3ForConditionalGeneration",
    "tiny-qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
    "tiny-idefics3": "Idefics3ForConditionalGeneration",
    "tiny-llava-next": "LlavaNextForConditionalGeneration",
    "tiny-internvl": "InternVLForConditionalGeneration",
    "tiny-qwen2-vl": "Qwen2VLForConditionalGeneration",
}
TEXTS = ["Which organ is shown in this image?", "Is there a lesion?", "brain", "lung", "liver", "yes", "no"]


@pytest.mark.parametrize("preset", sorted(TINY))
def test_each_rule_and_the_family_table_put_every_parameter_in_the_same_group(preset):
    model = build_model(preset, device="meta")
    rule = RULES[TINY[preset]]
    groups = {name: rule.group_of(name) for name, _ in model.named_parameters()}
    assert groups == {name: group_of(name, "vlm") for name in groups}
    assert set(groups.values()) == {"vision_tower", "connector", "llm", "lm_head"}
    # every norm of the LLM is an llm tensor; the input embeddings go with the output head (as for llava)
    embeddings = [n for n in groups if n.endswith("embed_tokens.weight")]
    assert embeddings and all(groups[n] == "lm_head" for n in embeddings)


def test_qwen_merger_is_the_connector_though_it_sits_inside_the_vision_module():
    assert group_of("model.visual.merger.ln_q.weight", "vlm") == "connector"
    assert group_of("model.visual.merger.mlp.2.bias", "vlm") == "connector"
    assert group_of("model.visual.blocks.0.norm1.weight", "vlm") == "vision_tower"
    assert group_of("model.text_model.layers.1.input_layernorm.weight", "vlm") == "llm"
    assert group_of("model.image_newline", "vlm") == "connector"  # LLaVA-NeXT's row separator
    assert set(VLM_GROUP_PREFIXES) >= set(RULES)


def test_real_shape_presets_count_the_published_totals():
    # google/medgemma-4b-it 4.30B, Qwen2.5-VL-7B (Lingshu-7B) 8.29B, HuggingFaceTB/SmolVLM-256M 256M
    # llava-hf/llava-v1.6-mistral-7b-hf 7.57B, Qwen/Qwen2-VL-2B-Instruct (MedVLM-R1's shape) 2.21B
    totals = {"medgemma-4b": 4_300_079_472, "lingshu-7b": 8_292_166_656, "smolvlm-256m": 256_484_928,
              "llava-next-mistral-7b": 7_566_747_648, "qwen2-vl-2b": 2_208_985_600}  # fmt: skip
    for preset, total in totals.items():
        assert sum(p.numel() for p in build_model(preset, device="meta").parameters()) == total, preset


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-vlm")
    return {p: write_tiny_vlm(p, root / p, TEXTS) for p in TINY}


@pytest.mark.parametrize("preset", sorted(TINY))
def test_a_tiny_checkpoint_loads_with_its_own_class_processor_and_decoder_layer(tiny_checkpoints, preset):
    path = tiny_checkpoints[preset]
    chosen = default_preset("vlm", path)  # --model-path without --preset: the checkpoint's architecture
    assert chosen.notes["model_class"] == TINY[preset]
    built = load(chosen, path)
    assert type(built.model).__name__ == TINY[preset]
    assert built.processor is not None and built.processor.chat_template
    assert built.tokenizer is built.processor.tokenizer
    layers = [m for m in built.model.modules() if type(m).__name__ == built.preset.decoder_layer]
    assert len(layers) == built.model.config.text_config.num_hidden_layers


def _copy_checkpoint(src, dst, drop=()):
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in drop:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_an_architecture_without_a_rule_is_named_with_the_supported_ones(tiny_checkpoints, tmp_path):
    path = _copy_checkpoint(tiny_checkpoints["tiny-gemma3"], tmp_path / "paligemma")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(
        json.dumps({**config, "architectures": ["PaliGemmaForConditionalGeneration"]})
    )
    for attempt in (lambda: default_preset("vlm", path), lambda: load("medgemma-4b", path)):
        with pytest.raises(CheckpointError) as err:
            attempt()
        message = str(err.value)
        assert "PaliGemmaForConditionalGeneration" in message and str(path) in message
        assert all(name in message for name in RULES)
    with pytest.raises(CheckpointError, match="no architecture"):
        rule_for([], where="x")


def test_a_checkpoint_without_chat_template_or_processor_says_what_is_missing(tiny_checkpoints, tmp_path):
    src = tiny_checkpoints["tiny-qwen2.5-vl"]
    no_template = _copy_checkpoint(src, tmp_path / "no-template", drop={"chat_template.jinja"})
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {no_template} has no chat template")):
        load("lingshu-7b", no_template)
    bare = _copy_checkpoint(
        src,
        tmp_path / "bare",
        drop={
            "chat_template.jinja",
            "tokenizer.json",
            "tokenizer_config.json",
            "preprocessor_config.json",
            "processor_config.json",
        },
    )
    with pytest.raises(
        CheckpointError, match=re.escape(f"checkpoint {bare} has no processor medtune can load")
    ):
        load("lingshu-7b", bare)
