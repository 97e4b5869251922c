"""LLaVA-Med presets: v1.5 (Mistral-7B, CLIP ViT-L/14-336, MLP connector) and v1 (LLaMA-7B, ViT-L/14-224, linear)."""

from __future__ import annotations

from torch import nn
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
)

from medtune.core_models.presets import Preset, register_preset

# LLaVA-Med v1 (LLaVA v0 recipe) added 4 tokens to LLaMA's 32,000: [PAD] 32000, <im_patch> 32001, <im_start> 32002,
# <im_end> 32003. <im_patch> is the placeholder its code replaces with image features, i.e. Llava's image token.
V1_VOCAB = 32_004
V1_IMAGE_TOKEN = 32_001
# LLaVA-Med v1.5 keeps Mistral's 32,000 tokens and marks images with an out-of-vocabulary id; Llava needs the image
# token inside the vocabulary, so (as the llava-hf conversions do) <image> is 32000, <pad> 32001, padded to 32,064.
V15_VOCAB = 32_064
V15_IMAGE_TOKEN = 32_000


def clip_vit_l14(image_size: int) -> CLIPVisionConfig:
    """Return the CLIP ViT-L/14 vision config at ``image_size`` pixels."""
    return CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=image_size,
        patch_size=14,
        projection_dim=768,
        layer_norm_eps=1e-5,
        hidden_act="quick_gelu",
    )


def llava_med_v15_config() -> LlavaConfig:
    """Return LLaVA-Med v1.5's config: Mistral-7B-Instruct-v0.2, CLIP ViT-L/14 at 336 px, 2-layer GELU MLP."""
    text = MistralConfig(
        vocab_size=V15_VOCAB,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rms_norm_eps=1e-5,
        rope_theta=1_000_000.0,
        sliding_window=None,
        pad_token_id=32_001,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=clip_vit_l14(336),
        text_config=text,
        image_token_index=V15_IMAGE_TOKEN,
        image_seq_length=(336 // 14) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


def llava_med_v1_config() -> LlavaConfig:
    """Return LLaVA-Med v1's config: LLaMA-7B with 32,004 tokens, CLIP ViT-L/14 at 224 px, linear connector."""
    text = LlamaConfig(
        vocab_size=V1_VOCAB,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        pad_token_id=32_000,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=clip_vit_l14(224),
        text_config=text,
        image_token_index=V1_IMAGE_TOKEN,
        image_seq_length=(224 // 14) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="linear",
    )
    config.mm_projector_type = "linear"  # the original release's key; LinearConnectorLlava reads it
    config.architectures = [LinearConnectorLlava.__name__]
    return config


class LinearProjector(nn.Module):
    """LLaVA v0's connector: one linear map from vision features to the LLM width (no activation, no 2nd layer)."""

    def __init__(self, config: LlavaConfig):
        super().__init__()
        self.linear_1 = nn.Linear(
            config.vision_config.hidden_size,
            config.text_config.hidden_size,
            bias=config.multimodal_projector_bias,
        )

    def forward(self, image_features):
        """Return the projected features, shape (..., text hidden size), for features of shape (..., vision hidden)."""
        return self.linear_1(image_features)


class LinearConnectorLlava(LlavaForConditionalGeneration):
    """LlavaForConditionalGeneration whose connector is a single linear layer when ``mm_projector_type == "linear"``.

    transformers' LlavaMultiModalProjector is always linear_1 -> act -> linear_2 (no option for one layer), and an
    identity second layer would add 16.8M parameters LLaVA-Med v1 does not have. This subclass keeps every Llava
    behaviour (forward, generate, parameter names ``model.multi_modal_projector.linear_1.*``) and only swaps the
    projector; it loads with from_pretrained like any Llava checkpoint.
    """

    def __init__(self, config: LlavaConfig):
        super().__init__(config)
        if getattr(config, "mm_projector_type", "mlp2x_gelu") == "linear":
            self.model.multi_modal_projector = LinearProjector(config)
            self.post_init()


LLAVA_MED_V15 = register_preset(
    Preset(
        name="llava-med-v1.5",
        family="llava",
        description="LLaVA-Med v1.5: Mistral-7B-Instruct-v0.2, CLIP ViT-L/14-336, 2-layer MLP connector (7.6B)",
        make_config=llava_med_v15_config,
        template="mistral_instruct",
        decoder_layer="MistralDecoderLayer",
        notes={"original_architecture": "LlavaMistralForCausalLM"},
    )
)

LLAVA_MED_V1 = register_preset(
    Preset(
        name="llava-med-v1",
        family="llava",
        description="LLaVA-Med v1: LLaMA-7B (32,004 tokens), CLIP ViT-L/14-224, linear connector (7.0B)",
        make_config=llava_med_v1_config,
        template="vicuna_v1",
        decoder_layer="LlamaDecoderLayer",
        notes={
            "original_architecture": "LlavaLlamaForCausalLM",
            "model_class": LinearConnectorLlava.__name__,
        },
    )
)
