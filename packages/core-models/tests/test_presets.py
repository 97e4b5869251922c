"""The real presets build on the meta device with the published architectures' sizes."""

from __future__ import annotations

import pytest

from medtune.core_models import get_preset
from medtune.core_models.llava_med import LinearConnectorLlava, LinearProjector
from medtune.core_models.model_class import build_model


@pytest.mark.parametrize(
    ("preset", "total", "template"),
    [
        # BLIP-VQA at 480 px: ViT-B/16 86,339,328 + JTM 137,258,496 + DEC 137,881,148 (Table 1's full row).
        ("miss", 361_478_972, "blip_vqa"),
        # CLIP ViT-L/14-224 303,179,776 + linear connector 4,198,400 + LLaMA-7B with 32,004 tokens.
        ("llava-med-v1", 7_045_826_560, "vicuna_v1"),
    ],
)
def test_real_presets_have_the_papers_sizes(preset, total, template):
    model = build_model(preset, device="meta")
    assert sum(p.numel() for p in model.parameters()) == total
    assert get_preset(preset).template == template


def test_llava_med_v1_has_a_single_linear_connector_and_32004_tokens():
    model = build_model("llava-med-v1", device="meta")
    assert isinstance(model, LinearConnectorLlava)
    assert isinstance(model.model.multi_modal_projector, LinearProjector)
    assert model.model.multi_modal_projector.linear_1.weight.shape == (4096, 1024)
    assert model.get_input_embeddings().weight.shape[0] == 32_004
    assert model.config.vision_config.image_size == 224


def test_llava_med_v15_is_mistral_with_a_336px_tower_and_mlp_connector():
    model = build_model("llava-med-v1.5", device="meta")
    assert type(model.model.language_model).__name__ == "MistralModel"
    assert model.config.vision_config.image_size == 336 and model.config.vision_feature_layer == -2
    assert hasattr(model.model.multi_modal_projector, "linear_2")
    assert get_preset("llava-med-v1.5").template == "mistral_instruct"


def test_tiny_miss_builds_and_points_at_its_demo_weights():
    preset = get_preset("tiny-miss")
    assert preset.family == "miss" and preset.default_weights.name == "tiny-miss"
    assert sum(p.numel() for p in build_model(preset).parameters()) < 1_000_000
