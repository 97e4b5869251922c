"""Every kernels test runs the real Triton kernels through Triton's interpreter on the CPU (GPU tests opt out).

Also the tiny real transformers models (LLaVA, BLIP-VQA) that the patch tests on CPU and GPU share.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _triton_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    # medtune.kernels reads TRITON_INTERPRET at call time, so setting it here (nox also sets it)
    # is enough to route CPU tensors through the same kernels the GPU compiles.
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _tiny_llava() -> tuple[nn.Module, dict]:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
    )
    text = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=64,
    )
    model = LlavaForConditionalGeneration(
        LlavaConfig(vision_config=vision, text_config=text, image_token_index=63)
    )
    ids = torch.tensor([[1, 63, 63, 63, 63, 5, 6, 7, 8]])  # 4 image tokens = (16 / 8) ** 2 patches
    return model.eval(), {"input_ids": ids, "pixel_values": torch.randn(1, 3, 16, 16), "labels": ids}


def _tiny_blip() -> tuple[nn.Module, dict]:
    from transformers import BlipConfig, BlipForQuestionAnswering

    torch.manual_seed(0)
    text = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "encoder_hidden_size": 32,
        "bos_token_id": 1,
        "sep_token_id": 2,
        "pad_token_id": 0,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 16,
        "patch_size": 8,
    }
    model = BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision))
    batch = {
        "input_ids": torch.tensor([[1, 5, 6, 2]]),
        "pixel_values": torch.randn(1, 3, 16, 16),
        "labels": torch.tensor([[1, 7, 8, 2]]),
    }
    return model.eval(), batch


@pytest.fixture
def tiny_model() -> Callable[[str], tuple[nn.Module, dict]]:
    """Return a builder: family ("llava" or "blip") -> (fresh tiny model in eval mode, its batch on CPU)."""
    builders = {"llava": _tiny_llava, "blip": _tiny_blip}
    return lambda family: builders[family]()
