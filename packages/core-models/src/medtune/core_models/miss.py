"""MISS presets: the BLIP-VQA architecture (ViT vision encoder, BERT joint text-multimodal encoder, BERT decoder)."""

from __future__ import annotations

from transformers import BlipConfig, BlipTextConfig, BlipVisionConfig

from medtune.core_models.presets import ASSETS, Preset, register_preset

TINY_MISS_IMAGE_SIZE = 32
TINY_MISS_PATCH = 8


def miss_config() -> BlipConfig:
    """Return MISS's config: BLIP-VQA with a ViT-B/16 at 480 px and BERT-base encoder/decoder (30,524 tokens)."""
    vision = BlipVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=480,
        patch_size=16,
        layer_norm_eps=1e-6,
    )
    text = BlipTextConfig(
        vocab_size=30524,
        hidden_size=768,
        encoder_hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=30522,
        eos_token_id=2,
        sep_token_id=102,
    )
    return BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())


def tiny_miss_config(vocab_size: int = 160) -> BlipConfig:
    """Return the tiny MISS demo config: the same three BLIP modules at a few hundred thousand parameters."""
    vision = BlipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=TINY_MISS_IMAGE_SIZE,
        patch_size=TINY_MISS_PATCH,
        layer_norm_eps=1e-6,
    )
    text = BlipTextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        encoder_hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        sep_token_id=2,
    )
    return BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())


MISS = register_preset(
    Preset(
        name="miss",
        family="miss",
        description="MISS: BLIP-VQA at 480 px, ViT-B/16 + BERT-base encoder with cross-attention + BERT-base decoder",
        make_config=miss_config,
        template="blip_vqa",
        decoder_layer="BlipTextLayer",
        notes={"vision_layer": "BlipEncoderLayer"},
    )
)

TINY_MISS = register_preset(
    Preset(
        name="tiny-miss",
        family="miss",
        description="built-in demo: BLIP-VQA with a 2x64 ViT, 2x64 BERT encoder and decoder",
        make_config=tiny_miss_config,
        template="blip_vqa",
        default_weights=ASSETS / "tiny-miss",
        decoder_layer="BlipTextLayer",
        notes={"vision_layer": "BlipEncoderLayer"},
    )
)
