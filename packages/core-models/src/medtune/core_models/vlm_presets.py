"""Real-shape vlm presets for accounting and planning: MedGemma 4B, Lingshu 7B (Qwen2.5-VL-7B), SmolVLM 256M.

The configs are written from the published config.json values of each release (every field that shapes a
parameter; nothing is downloaded). They build on the meta device for `medtune params`; training reads the
checkpoint's own config.json from --model-path.
"""

from __future__ import annotations

from transformers import Gemma3Config, Idefics3Config, LlavaNextConfig, Qwen2_5_VLConfig, Qwen2VLConfig

from medtune.core_models.presets import Preset, register_preset


def medgemma_4b_config() -> Gemma3Config:
    """Return MedGemma 4B's config (google/medgemma-4b-it: Gemma 3 4B, SigLIP-So400m/14 at 896 px, 256 tokens)."""
    return Gemma3Config(
        text_config={
            "vocab_size": 262_208,
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "num_hidden_layers": 34,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "query_pre_attn_scalar": 256,
            "sliding_window": 1024,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 131_072,
        },
        vision_config={
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 896,
            "patch_size": 14,
            "layer_norm_eps": 1e-6,
            "vision_use_head": False,
        },
        mm_tokens_per_image=256,
        boi_token_index=255_999,
        eoi_token_index=256_000,
        image_token_index=262_144,
        architectures=["Gemma3ForConditionalGeneration"],
    )


def qwen2_5_vl_7b_config() -> Qwen2_5_VLConfig:
    """Return Qwen2.5-VL-7B's config, the shape of Lingshu-7B and HuatuoGPT-Vision-7B-Qwen2.5VL."""
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 152_064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 128_000,
            "bos_token_id": 151_643,
            "eos_token_id": 151_645,
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "hidden_act": "silu",
        },
        image_token_id=151_655,
        video_token_id=151_656,
        vision_start_token_id=151_652,
        tie_word_embeddings=False,
        architectures=["Qwen2_5_VLForConditionalGeneration"],
    )


def qwen2_vl_2b_config() -> Qwen2VLConfig:
    """Return Qwen2-VL-2B's config (the shape of MedVLM-R1): Qwen2 1.5B LLM (tied head), 32-layer ViT, 2x2 merger."""
    return Qwen2VLConfig(
        text_config={
            "vocab_size": 151_936,
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 32768,
            "bos_token_id": 151_643,
            "eos_token_id": 151_645,
        },
        vision_config={
            "depth": 32,
            "embed_dim": 1280,
            "hidden_size": 1536,
            "mlp_ratio": 4,
            "num_heads": 16,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "hidden_act": "quick_gelu",
        },
        image_token_id=151_655,
        video_token_id=151_656,
        vision_start_token_id=151_652,
        tie_word_embeddings=True,
        architectures=["Qwen2VLForConditionalGeneration"],
    )


def smolvlm_256m_config() -> Idefics3Config:
    """Return SmolVLM-256M's config (Idefics3: SigLIP-B/16 at 512 px, pixel shuffle x4, SmolLM2-135M)."""
    return Idefics3Config(
        text_config={
            "model_type": "llama",
            "vocab_size": 49_280,
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 8192,
            "tie_word_embeddings": False,
            "pad_token_id": 2,
        },
        vision_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 512,
            "patch_size": 16,
        },
        scale_factor=4,
        image_token_id=49_190,
        tie_word_embeddings=False,
        architectures=["Idefics3ForConditionalGeneration"],
    )


def llava_next_mistral_7b_config() -> LlavaNextConfig:
    """Return LLaVA-NeXT (v1.6) Mistral 7B's config: CLIP ViT-L/14 at 336 px with any-resolution crops, Mistral 7B."""
    return LlavaNextConfig(
        text_config={
            "model_type": "mistral",
            "vocab_size": 32_064,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 32768,
            "sliding_window": None,
            "tie_word_embeddings": False,
        },
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
        },
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        image_token_index=32_000,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        architectures=["LlavaNextForConditionalGeneration"],
    )


MEDGEMMA_4B = register_preset(
    Preset(
        name="medgemma-4b",
        family="vlm",
        description="MedGemma 4B: Gemma 3 4B LLM, SigLIP-So400m/14 at 896 px, pooled to 256 image tokens (4.3B)",
        make_config=medgemma_4b_config,
        template="chat",
        decoder_layer="Gemma3DecoderLayer",
        notes={"model_class": "Gemma3ForConditionalGeneration"},
    )
)

LINGSHU_7B = register_preset(
    Preset(
        name="lingshu-7b",
        family="vlm",
        description="Lingshu 7B (the Qwen2.5-VL-7B shape): Qwen2.5 7B LLM, 32-layer ViT with a 2x2 patch merger (8.3B)",
        make_config=qwen2_5_vl_7b_config,
        template="chat",
        decoder_layer="Qwen2_5_VLDecoderLayer",
        notes={"model_class": "Qwen2_5_VLForConditionalGeneration"},
    )
)

SMOLVLM_256M = register_preset(
    Preset(
        name="smolvlm-256m",
        family="vlm",
        description="SmolVLM 256M (Idefics3): SmolLM2-135M LLM, SigLIP-B/16 at 512 px, image splitting (256M)",
        make_config=smolvlm_256m_config,
        template="chat",
        decoder_layer="LlamaDecoderLayer",
        notes={"model_class": "Idefics3ForConditionalGeneration"},
    )
)

LLAVA_NEXT_MISTRAL_7B = register_preset(
    Preset(
        name="llava-next-mistral-7b",
        family="vlm",
        description="LLaVA-NeXT (v1.6) Mistral 7B: CLIP ViT-L/14-336 with any-resolution crops, Mistral 7B (7.6B)",
        make_config=llava_next_mistral_7b_config,
        template="chat",
        decoder_layer="MistralDecoderLayer",
        notes={"model_class": "LlavaNextForConditionalGeneration"},
    )
)

QWEN2_VL_2B = register_preset(
    Preset(
        name="qwen2-vl-2b",
        family="vlm",
        description="Qwen2-VL 2B (the shape of MedVLM-R1): Qwen2 1.5B LLM, 32-layer ViT with a 2x2 merger (2.2B)",
        make_config=qwen2_vl_2b_config,
        template="chat",
        decoder_layer="Qwen2VLDecoderLayer",
        notes={"model_class": "Qwen2VLForConditionalGeneration"},
    )
)
