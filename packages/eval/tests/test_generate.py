import pytest
import torch

from medtune.eval import generate_answers

from .conftest import build_tokenizer

N_IMAGE_TOKENS = 4  # 16 px image, 8 px patches, CLS dropped by the "default" feature strategy


@pytest.fixture(scope="module")
def llava():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = build_tokenizer(("<image>",))
    tokenizer.padding_side = "left"
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config).eval(), tokenizer


def _llava_batches(tokenizer):
    questions = ["what organ is this", "is there a mass in the left lung", "is this normal"]
    prompts = ["<image>" * N_IMAGE_TOKENS + " " + q for q in questions]
    generator = torch.Generator().manual_seed(1)
    batches = []
    for start in (0, 2):
        encoded = tokenizer(
            prompts[start : start + 2], padding=True, return_tensors="pt", add_special_tokens=False
        )
        pixels = torch.randn(len(encoded["input_ids"]), 3, 16, 16, generator=generator)
        batches.append({**encoded, "pixel_values": pixels, "qids": list(range(start, start + 2))})
    return batches


def test_llava_greedy_is_batched_deterministic_and_strips_the_prompt(llava):
    model, tokenizer = llava
    batches = _llava_batches(tokenizer)
    answers = generate_answers(model, batches, tokenizer, max_new_tokens=4, progress=False)
    assert len(answers) == 3
    assert answers == generate_answers(model, batches, tokenizer, max_new_tokens=4, progress=False)
    # reference: the new tokens only, straight from generate()
    batch = batches[0]
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    prompt_len = batch["input_ids"].shape[1]
    expected = [t.strip() for t in tokenizer.batch_decode(output[:, prompt_len:], skip_special_tokens=True)]
    assert answers[:2] == expected
    for answer in answers:
        assert len(tokenizer(answer, add_special_tokens=False)["input_ids"]) <= 4
        assert "what organ" not in answer and "<image>" not in answer


def test_llava_sampling_is_seeded(llava):
    model, tokenizer = llava
    batches = _llava_batches(tokenizer)
    run = lambda seed: generate_answers(  # noqa: E731
        model, batches, tokenizer, max_new_tokens=6, temperature=0.2, seed=seed, progress=False
    )
    assert run(3) == run(3)


def test_llava_rejects_right_padding(llava):
    model, tokenizer = llava
    batch = _llava_batches(tokenizer)[0]
    batch["attention_mask"] = batch["attention_mask"].flip(1)
    with pytest.raises(ValueError, match="Batch 0 is right-padded"):
        generate_answers(model, [batch], tokenizer, progress=False)


def test_miss_answers_with_its_decoder():
    from transformers import BlipConfig, BlipForQuestionAnswering

    tokenizer = build_tokenizer()
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = BlipConfig(
        vision_config={**small, "image_size": 16, "patch_size": 8},
        text_config={
            **small,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 64,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id,
        },
    )
    torch.manual_seed(0)
    model = BlipForQuestionAnswering(config).eval()
    encoded = tokenizer(["what organ is this", "is there a mass"], padding=True, return_tensors="pt")
    batch = {**encoded, "pixel_values": torch.randn(2, 3, 16, 16)}
    answers = generate_answers(model, [batch], tokenizer, max_new_tokens=5, family="miss", progress=False)
    output = model.generate(
        pixel_values=batch["pixel_values"],
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        max_new_tokens=5,
    )
    assert answers == [t.strip() for t in tokenizer.batch_decode(output, skip_special_tokens=True)]
    assert len(answers) == 2 and all(answers)
    assert answers == generate_answers(
        model, [batch], tokenizer, max_new_tokens=5, family="miss", progress=False
    )
