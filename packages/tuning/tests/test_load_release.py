"""`medtune train --model-path` on a broken original LLaVA-Med release is a one-sentence usage error (exit 2)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig

from medtune.core_models import build_word_tokenizer
from medtune.tuning.cli import main


def test_partial_release_checkpoint_exits_2_naming_the_missing_tensors(tmp_path, demo_cache, capsys):
    tower = tmp_path / "clip"
    CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=28,
        patch_size=14,
    ).save_pretrained(tower)
    save_file({"vision_model.post_layernorm.weight": torch.ones(32)}, tower / "model.safetensors")
    release = tmp_path / "llava-med-v1.5"
    release.mkdir()
    config = {
        "architectures": ["LlavaMistralForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 32000,
        "mm_vision_tower": str(tower),
        "mm_projector_type": "mlp2x_gelu",
    }
    (release / "config.json").write_text(json.dumps(config))
    save_file(
        {"model.norm.weight": torch.ones(64)}, release / "model.safetensors"
    )  # everything else is missing
    build_word_tokenizer(["a chest x-ray"]).save_pretrained(release)
    out = tmp_path / "runs"

    argv = ["train", "llava", "ln", "--preset", "llava-med-v1.5", "--model-path", str(release)]
    assert main([*argv, "--output-dir", str(out), "--quiet"]) == 2

    err = capsys.readouterr().err
    assert "does not fit the converted LLaVA model" in err
    assert "missing tensors (model.vision_tower." in err  # named, first few, with the count
    assert err.count("\n") == 1
    assert not out.exists()
