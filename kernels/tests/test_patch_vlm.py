"""patch_norms on tiny random Gemma 3, Qwen2.5-VL, Qwen2-VL, Idefics3 and InternVL models: every norm class they
use is fused, and the loss and every gradient match the unpatched model (the reference: transformers' own norms)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medtune.kernels import FusedLayerNorm, FusedRMSNorm, patch_norms, trace_launches

MODEL_TOL = {"atol": 1e-4, "rtol": 1e-4}  # fp32; as test_patch.py
TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 64,
    "max_position_embeddings": 64,
}
VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


def _gemma3() -> tuple[nn.Module, dict]:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    config = Gemma3Config(
        text_config={**TEXT, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8},
        vision_config={**VIT, "image_size": 16, "patch_size": 4, "vision_use_head": False},
        mm_tokens_per_image=4,
        boi_token_index=60,
        eoi_token_index=61,
        image_token_index=62,
    )
    model = Gemma3ForConditionalGeneration(config)
    ids = torch.tensor([[2, 5, 60, 62, 62, 62, 62, 61, 7, 8, 9, 10, 11]])
    batch = {
        "input_ids": ids,
        "pixel_values": torch.randn(1, 3, 16, 16),
        "labels": ids,
        "token_type_ids": (ids == 62).long(),
    }
    return model, batch


def _qwen2_5_vl() -> tuple[nn.Module, dict]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config={
            **TEXT,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 16,
            "fullatt_block_indexes": [1],
        },
        image_token_id=62,
        video_token_id=63,
        vision_start_token_id=60,
        vision_end_token_id=61,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    ids = torch.tensor(
        [[5, 60, 62, 62, 62, 62, 61, 7, 8, 9, 10]]
    )  # a 4 x 4 patch grid merged 2 x 2: 4 tokens
    batch = {
        "input_ids": ids,
        "pixel_values": torch.randn(16, 3 * 2 * 4 * 4),
        "labels": ids,
        "image_grid_thw": torch.tensor([[1, 4, 4]]),
    }
    return model, batch


def _qwen2_vl() -> tuple[nn.Module, dict]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig(
        text_config={**TEXT, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                 "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32, "mlp_ratio": 2, "num_heads": 2, "patch_size": 4,
                       "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=62, video_token_id=63, vision_start_token_id=60, vision_end_token_id=61,
    )  # fmt: skip
    model = Qwen2VLForConditionalGeneration(config)
    ids = torch.tensor([[5, 60, 62, 62, 62, 62, 61, 7, 8, 9, 10]])
    batch = {"input_ids": ids, "pixel_values": torch.randn(16, 3 * 2 * 4 * 4), "labels": ids,
             "image_grid_thw": torch.tensor([[1, 4, 4]]), "mm_token_type_ids": (ids == 62).long()}  # fmt: skip
    return model, batch


def _idefics3() -> tuple[nn.Module, dict]:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    config = Idefics3Config(
        text_config={**TEXT, "model_type": "llama"},
        vision_config={**VIT, "image_size": 16, "patch_size": 4},
        scale_factor=2,
        image_token_id=62,
    )
    model = Idefics3ForConditionalGeneration(config)
    ids = torch.tensor([[5, 61, *[62] * 8, 61, 7, 8, 9]])  # two tiles of (16 / 4)^2 / 2^2 = 4 tokens
    batch = {
        "input_ids": ids,
        "pixel_values": torch.randn(1, 2, 3, 16, 16),
        "labels": ids,
        "pixel_attention_mask": torch.ones(1, 2, 16, 16, dtype=torch.bool),
    }
    return model, batch


def _internvl() -> tuple[nn.Module, dict]:
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    config = InternVLConfig(
        text_config={**TEXT, "model_type": "qwen2"},
        vision_config={**VIT, "image_size": [16, 16], "patch_size": [4, 4]},
        image_token_id=62,
        image_seq_length=4,
    )
    model = InternVLForConditionalGeneration(config)
    ids = torch.tensor([[5, 60, 62, 62, 62, 62, 61, 7, 8, 9]])  # (16 / 4)^2 patches shuffled by 0.5: 4 tokens
    return model, {"input_ids": ids, "pixel_values": torch.randn(1, 3, 16, 16), "labels": ids}


MODELS = {"gemma3": _gemma3, "qwen2_5_vl": _qwen2_5_vl, "qwen2_vl": _qwen2_vl, "idefics3": _idefics3,
          "internvl": _internvl}  # fmt: skip
# The norm classes each architecture uses, and what patch_norms must turn each into.
NORM_CLASSES = {
    "gemma3": {"Gemma3RMSNorm": FusedRMSNorm, "LayerNorm": FusedLayerNorm},  # LLM + connector; SigLIP
    "qwen2_5_vl": {"Qwen2_5_VLRMSNorm": FusedRMSNorm},  # LLM, ViT blocks and the merger's ln_q
    "qwen2_vl": {"Qwen2VLRMSNorm": FusedRMSNorm, "LayerNorm": FusedLayerNorm},  # LLM; ViT blocks and ln_q
    "idefics3": {"LlamaRMSNorm": FusedRMSNorm, "LayerNorm": FusedLayerNorm},  # LLM; SigLIP
    "internvl": {"Qwen2RMSNorm": FusedRMSNorm, "LayerNorm": FusedLayerNorm},  # LLM; InternViT and projector
}


def _loss_and_grads(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_vlm_norm_class_is_fused_with_the_same_loss_and_gradients(arch):
    torch.manual_seed(0)
    model, batch = MODELS[arch]()
    model.eval()
    with torch.no_grad():  # off their init (Gemma's zeros, ones elsewhere), so a missed (1 + w) offset shows
        for module in model.modules():
            if "Norm" in type(module).__name__:
                for p in module.parameters(recurse=False):
                    p.add_(0.3 * torch.randn_like(p))
    norms = {n: type(m).__name__ for n, m in model.named_modules() if "Norm" in type(m).__name__}
    assert set(norms.values()) == set(NORM_CLASSES[arch])
    for name, p in model.named_parameters():  # LN-tuning: only the norms train
        p.requires_grad_(any(name.startswith(n + ".") for n in norms))
    ref_loss, ref_grads = _loss_and_grads(model, batch)

    with patch_norms(model) as handle, trace_launches() as launches:
        assert handle.skipped == []
        assert sorted(handle.patched) == sorted(norms)
        for name, kind in norms.items():
            fused = model.get_submodule(name)
            assert isinstance(fused, NORM_CLASSES[arch][kind]), name
            if kind.startswith("Gemma"):
                assert fused.offset == 1.0
        loss, grads = _loss_and_grads(model, batch)

    assert any(launch.kernel.endswith("_bwd") for launch in launches)
    torch.testing.assert_close(loss, ref_loss, **MODEL_TOL)
    assert grads.keys() == ref_grads.keys() and grads
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], **MODEL_TOL, msg=name)


class _OffsetRMSNorm(nn.Module):
    """A ``(1 + w)`` RMSNorm whose class name does not say Gemma: the probe must find its convention."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(hidden))
        self.eps = 1e-6

    def forward(self, x):
        return (1.0 + self.weight) * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class _DoubledRMSNorm(_OffsetRMSNorm):
    """Scales by ``2 * w``: equal to ``1 + w`` at w = 1, so only a probe at other weights refuses it."""

    def __init__(self, hidden: int) -> None:
        super().__init__(hidden)
        nn.init.ones_(self.weight)

    def forward(self, x):
        return 2 * self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


_OffsetRMSNorm.__name__, _DoubledRMSNorm.__name__ = "OffsetRMSNorm", "DoubledRMSNorm"


def test_the_scaling_convention_of_an_unknown_rms_norm_is_found_by_probing():
    model = nn.ModuleDict({"offset": _OffsetRMSNorm(24), "doubled": _DoubledRMSNorm(24)})
    with torch.no_grad():
        model["offset"].weight.normal_(0, 0.2)
    x = torch.randn(3, 24)
    expected = model["offset"](x)
    handle = patch_norms(model)
    assert handle.patched == ["offset"] and model["offset"].offset == 1.0
    assert [name for name, _ in handle.skipped] == ["doubled"]
    torch.testing.assert_close(model["offset"](x), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(model["doubled"].weight, torch.ones(24))  # the probe never touches the model's tensors
