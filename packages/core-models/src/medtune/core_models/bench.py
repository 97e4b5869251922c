"""The `bench-llava` preset: LLaVA at a size where matrix work dominates a small CPU, for method benchmarks."""

from __future__ import annotations

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

from medtune.core_models.presets import Preset, register_preset

BENCH_IMAGE_SIZE = 112
BENCH_PATCH = 14  # CLIP ViT-L/14's patch, so 64 image tokens per image


def bench_llava_config(vocab_size: int = 8_192, image_token_id: int = 4) -> LlavaConfig:
    """Return the bench config: CLIP-style ViT 4x256, 2-layer MLP connector, LLaMA 6x512 (about 30M parameters)."""
    vision = CLIPVisionConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=BENCH_IMAGE_SIZE,
        patch_size=BENCH_PATCH,
        projection_dim=256,
        hidden_act="quick_gelu",
    )
    text = LlamaConfig(
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=vocab_size,
        max_position_embeddings=1024,
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
        image_seq_length=(BENCH_IMAGE_SIZE // BENCH_PATCH) ** 2,
        vision_feature_layer=-2,  # as LLaVA-Med: the penultimate ViT layer feeds the connector
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


BENCH_LLAVA = register_preset(
    Preset(
        name="bench-llava",
        family="llava",
        description="method benchmark: CLIP-style ViT 4x256 at 112 px, MLP connector, LLaMA 6x512, "
        "8k vocabulary (about 30M parameters; random init only)",
        make_config=bench_llava_config,
        template="demo",
        decoder_layer="LlamaDecoderLayer",
    )
)
