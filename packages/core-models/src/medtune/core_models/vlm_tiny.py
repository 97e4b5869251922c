"""Tiny vlm checkpoints for tests and smoke runs: each supported architecture at a few hundred thousand parameters.

`write_tiny_vlm` saves a complete HF-format checkpoint folder, as a release ships it: random weights from the
tiny preset's config, a byte-level BPE tokenizer trained on the given texts with the architecture's special
tokens at fixed ids, the architecture's own image processor configured small, its own processor class, and a
chat template that renders the release's single-image turn format (Gemma 3, Qwen2.5-VL / ChatML, SmolVLM).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Gemma3Config,
    Gemma3Processor,
    Idefics3Config,
    Idefics3Processor,
    InternVLConfig,
    LlavaNextConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
)

from medtune.core_models.presets import Preset, register_preset
from medtune.core_models.vlm_processor import (
    ImageOnlyInternVLProcessor,
    ImageOnlyQwen2_5_VLProcessor,
    ImageOnlyQwen2VLProcessor,
    save_processor,
)

TINY_VOCAB = 400
TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": TINY_VOCAB,
    "max_position_embeddings": 512,
}
TINY_VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}

# Special tokens come first in each tiny vocabulary, so their ids are fixed and the configs can name them.
GEMMA3_SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
IDEFICS3_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]

# Chat templates written for these tiny checkpoints; each renders a single-image user turn and the assistant's
# answer exactly as its release's template does.
GEMMA3_CHAT = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
QWEN_CHAT = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
INTERNVL_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<video>",
]
# InternVL 3's ChatML turns, the image as <IMG_CONTEXT> on its own line before the question
INTERNVL_CHAT = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAVA_NEXT_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
# LLaVA-NeXT Mistral's turn format: "[INST] <image>\nQUESTION [/INST] ANSWER</s>"
LLAVA_NEXT_CHAT = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST] "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    " [/INST]{% elif message['role'] == 'assistant' %} "
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{{ eos_token }}{% endif %}{% endfor %}"
)
SMOLVLM_CHAT = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% elif item['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def tiny_gemma3_config() -> Gemma3Config:
    """Return a tiny Gemma 3: SigLIP 2x32 at 32 px (16 patches pooled to 4 tokens), Gemma 3 LLM 2x64."""
    ids = {t: i for i, t in enumerate(GEMMA3_SPECIALS)}
    return Gemma3Config(
        text_config={
            **TINY_TEXT,
            "head_dim": 32,
            "query_pre_attn_scalar": 32,
            "sliding_window": 64,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "bos_token_id": 2,
        },
        vision_config={**TINY_VIT, "image_size": 32, "patch_size": 8, "vision_use_head": False},
        mm_tokens_per_image=4,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
        architectures=["Gemma3ForConditionalGeneration"],
    )


def tiny_qwen2_5_vl_config() -> Qwen2_5_VLConfig:
    """Return a tiny Qwen2.5-VL: 2x32 ViT with 4 px patches and a 2x2 merger, Qwen2.5 LLM 2x64 (M-RoPE)."""
    ids = {t: i for i, t in enumerate(QWEN_SPECIALS)}
    return Qwen2_5_VLConfig(
        text_config={
            **TINY_TEXT,
            "bos_token_id": 0,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": 0,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 16,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        architectures=["Qwen2_5_VLForConditionalGeneration"],
    )


def tiny_qwen2_vl_config() -> Qwen2VLConfig:
    """Return a tiny Qwen2-VL: 2x32 ViT (LayerNorms) with 4 px patches and a 2x2 merger, Qwen2 2x64 (M-RoPE)."""
    ids = {t: i for i, t in enumerate(QWEN_SPECIALS)}
    return Qwen2VLConfig(
        text_config={
            **TINY_TEXT,
            "bos_token_id": 0,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": 0,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        architectures=["Qwen2VLForConditionalGeneration"],
    )


def tiny_idefics3_config() -> Idefics3Config:
    """Return a tiny Idefics3 (SmolVLM): SigLIP 2x32 at 32 px tiles, pixel shuffle x2 (4 tokens), LLaMA 2x64."""
    ids = {t: i for i, t in enumerate(IDEFICS3_SPECIALS)}
    return Idefics3Config(
        text_config={
            **TINY_TEXT,
            "model_type": "llama",
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": ids["<end_of_utterance>"],
            "tie_word_embeddings": False,
        },
        vision_config={**TINY_VIT, "image_size": 32, "patch_size": 8},
        scale_factor=2,
        image_token_id=ids["<image>"],
        architectures=["Idefics3ForConditionalGeneration"],
    )


def tiny_llava_next_config() -> LlavaNextConfig:
    """Return a tiny LLaVA-NeXT: CLIP 2x32 at 32 px with a 2 x 2 any-resolution grid, LLaMA 2x64."""
    ids = {t: i for i, t in enumerate(LLAVA_NEXT_SPECIALS)}
    return LlavaNextConfig(
        text_config={
            **TINY_TEXT,
            "model_type": "llama",
            "pad_token_id": 3,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        vision_config={**TINY_VIT, "model_type": "clip_vision_model", "image_size": 32, "patch_size": 8},
        image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]],
        image_token_index=ids["<image>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        architectures=["LlavaNextForConditionalGeneration"],
    )


def tiny_internvl_config() -> InternVLConfig:
    """Return a tiny InternVL: InternViT 2x32 at 32 px tiles (16 patches shuffled to 4 tokens), Qwen2 2x64."""
    ids = {t: i for i, t in enumerate(INTERNVL_SPECIALS)}
    return InternVLConfig(
        text_config={
            **TINY_TEXT,
            "model_type": "qwen2",
            "pad_token_id": 0,
            "eos_token_id": ids["<|im_end|>"],
            "tie_word_embeddings": False,
        },
        vision_config={**TINY_VIT, "image_size": [32, 32], "patch_size": [8, 8]},
        image_token_id=ids["<IMG_CONTEXT>"],
        image_seq_length=4,
        downsample_ratio=0.5,
        architectures=["InternVLForConditionalGeneration"],
    )


@dataclass(frozen=True)
class TinyKit:
    """What a tiny checkpoint of one architecture is made of besides its config."""

    specials: list[str]
    named: dict  # the tokenizer's bos/eos/pad/unk and model-specific special tokens
    chat_template: str
    end_of_turn: str  # the token the assistant's turn ends with (generation stops there)


KITS: dict[str, TinyKit] = {
    "tiny-gemma3": TinyKit(
        GEMMA3_SPECIALS,
        {
            "pad_token": "<pad>",
            "eos_token": "<eos>",
            "bos_token": "<bos>",
            "unk_token": "<unk>",
            "extra_special_tokens": {
                "image_token": "<image_soft_token>",
                "boi_token": "<start_of_image>",
                "eoi_token": "<end_of_image>",
            },
        },
        GEMMA3_CHAT,
        "<end_of_turn>",
    ),
    "tiny-qwen2.5-vl": TinyKit(
        QWEN_SPECIALS,
        {
            "pad_token": "<|endoftext|>",
            "eos_token": "<|im_end|>",
            "extra_special_tokens": {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        },
        QWEN_CHAT,
        "<|im_end|>",
    ),
    "tiny-qwen2-vl": TinyKit(
        QWEN_SPECIALS,
        {
            "pad_token": "<|endoftext|>",
            "eos_token": "<|im_end|>",
            "extra_special_tokens": {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        },
        QWEN_CHAT,
        "<|im_end|>",
    ),
    "tiny-idefics3": TinyKit(
        IDEFICS3_SPECIALS,
        {"pad_token": "<|endoftext|>", "bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>"},
        SMOLVLM_CHAT,
        "<end_of_utterance>",
    ),
    "tiny-internvl": TinyKit(
        INTERNVL_SPECIALS,
        {
            "pad_token": "<|endoftext|>",
            "eos_token": "<|im_end|>",
            "extra_special_tokens": {
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>",
            },
        },
        INTERNVL_CHAT,
        "<|im_end|>",
    ),
    "tiny-llava-next": TinyKit(
        LLAVA_NEXT_SPECIALS,
        {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
        LLAVA_NEXT_CHAT,
        "</s>",
    ),
}


def bpe_tokenizer(
    texts: Iterable[str], kit: TinyKit, vocab_size: int = TINY_VOCAB
) -> PreTrainedTokenizerFast:
    """Return a byte-level BPE tokenizer trained on ``texts`` with ``kit``'s special tokens at ids 0, 1, ..."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=kit.specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kit.named)


def tiny_processor(preset: str, tokenizer: PreTrainedTokenizerFast):
    """Return the architecture's own processor with its image processor configured for 32 px inputs."""
    kit = KITS[preset]
    if preset == "tiny-gemma3":
        from transformers import Gemma3ImageProcessorPil

        images = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
        return Gemma3Processor(images, tokenizer, chat_template=kit.chat_template, image_seq_length=4)
    if preset in ("tiny-qwen2.5-vl", "tiny-qwen2-vl"):
        from transformers import Qwen2VLImageProcessorPil, Qwen2VLProcessor

        # dynamic resolution: each side rounded to a multiple of 8 px (patch 4 x merge 2), area in [64, 1024]
        images = Qwen2VLImageProcessorPil(
            size={"shortest_edge": 64, "longest_edge": 1024},
            patch_size=4,
            temporal_patch_size=2,
            merge_size=2,
        )
        qwen2 = preset == "tiny-qwen2-vl"
        if importlib.util.find_spec("torchvision") is None:
            image_only = ImageOnlyQwen2VLProcessor if qwen2 else ImageOnlyQwen2_5_VLProcessor
            return image_only(images, tokenizer, chat_template=kit.chat_template)
        from transformers import Qwen2VLVideoProcessor

        processor = Qwen2VLProcessor if qwen2 else Qwen2_5_VLProcessor
        return processor(images, tokenizer, Qwen2VLVideoProcessor(), chat_template=kit.chat_template)
    if preset == "tiny-internvl":
        from transformers import GotOcr2ImageProcessorPil

        # tiles: the image cut into up to 4 crops of 32 px (plus a thumbnail when cut), as InternVL crops at 448
        images = GotOcr2ImageProcessorPil(
            size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1, max_patches=4
        )
        if importlib.util.find_spec("torchvision") is None:
            return ImageOnlyInternVLProcessor(images, tokenizer, kit.chat_template, image_seq_length=4)
        from transformers import InternVLProcessor, InternVLVideoProcessor

        return InternVLProcessor(
            images, tokenizer, InternVLVideoProcessor(), 4, chat_template=kit.chat_template
        )
    if preset == "tiny-llava-next":
        from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

        # any resolution: the image at the best grid of 32 px crops (up to 64 x 64) plus the whole image at 32 px
        images = LlavaNextImageProcessorPil(
            size={"shortest_edge": 32},
            crop_size={"height": 32, "width": 32},
            image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]],
        )
        return LlavaNextProcessor(
            images,
            tokenizer,
            patch_size=8,
            vision_feature_select_strategy="default",
            chat_template=kit.chat_template,
            num_additional_image_tokens=1,  # CLIP's class token
        )
    from transformers import Idefics3ImageProcessorPil

    # image splitting: the longest edge goes to 64 px, cut into 32 px tiles, plus the whole image at 32 px
    images = Idefics3ImageProcessorPil(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
    )
    return Idefics3Processor(images, tokenizer, image_seq_len=4, chat_template=kit.chat_template)


def write_tiny_vlm(preset: str, folder: str | Path, texts: Iterable[str], *, seed: int = 0) -> Path:
    """Write a complete tiny checkpoint of ``preset`` (tiny-gemma3, tiny-qwen2.5-vl, tiny-qwen2-vl, tiny-idefics3, tiny-llava-next, tiny-internvl) to ``folder``."""
    from medtune.core_models.model_class import build_model

    folder = Path(folder)
    words = ["user", "model", "assistant", "system", "You are a helpful assistant.", "User:", "Assistant:"]
    tokenizer = bpe_tokenizer([*texts, *words], KITS[preset])
    torch.manual_seed(seed)
    model = build_model(preset)
    # as the releases' generation configs do: stop at the end of the assistant's turn
    model.generation_config.eos_token_id = sorted(
        {tokenizer.convert_tokens_to_ids(t) for t in (tokenizer.eos_token, KITS[preset].end_of_turn)}
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    save_processor(tiny_processor(preset, tokenizer), folder)
    return folder


for _name, _make, _arch, _layer, _what in (
    (
        "tiny-gemma3",
        tiny_gemma3_config,
        "Gemma3ForConditionalGeneration",
        "Gemma3DecoderLayer",
        "Gemma 3 (MedGemma's architecture): SigLIP 2x32, Gemma 3 LLM 2x64",
    ),
    (
        "tiny-qwen2.5-vl",
        tiny_qwen2_5_vl_config,
        "Qwen2_5_VLForConditionalGeneration",
        "Qwen2_5_VLDecoderLayer",
        "Qwen2.5-VL (Lingshu's): 2x32 ViT + 2x2 merger, Qwen2.5 2x64",
    ),
    (
        "tiny-qwen2-vl",
        tiny_qwen2_vl_config,
        "Qwen2VLForConditionalGeneration",
        "Qwen2VLDecoderLayer",
        "Qwen2-VL (MedVLM-R1's): 2x32 ViT + 2x2 merger, Qwen2 2x64",
    ),
    (
        "tiny-idefics3",
        tiny_idefics3_config,
        "Idefics3ForConditionalGeneration",
        "LlamaDecoderLayer",
        "Idefics3 (SmolVLM's): SigLIP 2x32 tiles, LLaMA 2x64",
    ),
    (
        "tiny-internvl",
        tiny_internvl_config,
        "InternVLForConditionalGeneration",
        "Qwen2DecoderLayer",
        "InternVL 3: InternViT 2x32 tiles, pixel shuffle, Qwen2 2x64",
    ),
    (
        "tiny-llava-next",
        tiny_llava_next_config,
        "LlavaNextForConditionalGeneration",
        "LlamaDecoderLayer",
        "LLaVA-NeXT: CLIP 2x32 with any-resolution crops, LLaMA 2x64",
    ),
):
    register_preset(
        Preset(
            name=_name,
            family="vlm",
            description=f"tests: a tiny {_what} (random init; write_tiny_vlm saves a checkpoint)",
            make_config=_make,
            template="chat",
            decoder_layer=_layer,
            notes={"model_class": _arch},
        )
    )
