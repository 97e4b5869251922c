"""The built-in demo presets: a few-million-parameter LLaVA with a pretrained base bundled as safetensors."""

from __future__ import annotations

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

from medtune.core_models.presets import ASSETS, Preset, register_preset

TINY_IMAGE_SIZE = 48
TINY_PATCH = 8


def tiny_llava_config(vocab_size: int = 160, image_token_id: int = 4) -> LlavaConfig:
    """Return the tiny LLaVA config: CLIP-style ViT (LayerNorms), 2-layer MLP connector, LLaMA LLM (RMSNorms)."""
    vision = CLIPVisionConfig(
        hidden_size=96,
        intermediate_size=384,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH,
        projection_dim=96,
    )
    text = LlamaConfig(
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=vocab_size,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=(TINY_IMAGE_SIZE // TINY_PATCH) ** 2,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


TINY_LLAVA = register_preset(
    Preset(
        name="tiny-llava",
        family="llava",
        description="built-in demo: CLIP-style ViT 3x96, MLP connector, LLaMA 4x192 (about 2.5M parameters)",
        make_config=tiny_llava_config,
        template="demo",
        default_weights=ASSETS / "tiny-llava",
        decoder_layer="LlamaDecoderLayer",
    )
)
