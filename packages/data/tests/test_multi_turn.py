"""A multi-turn LLaVA conversation is one sample: every assistant turn supervised, prompts and image masked."""

import json

import pytest

from medtune.data import IGNORE_INDEX, LlavaCollator, get_template, read_vqa

M = IGNORE_INDEX


def _ids(tokenizer, tokens):
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert tokenizer.unk_token_id not in ids, "test vocabulary misses a token"
    return ids


@pytest.fixture
def conversation(tmp_path, builders):
    """A LLaVA JSON file with one three-turn conversation, read through read_vqa as the CLI reads it."""
    builders.make_image(tmp_path / "images" / "x.png", fmt="PNG")
    turns = [
        {"from": "human", "value": "<image>\nwhich organ ?"},
        {"from": "gpt", "value": "lung"},
        {"from": "human", "value": "is the heart enlarged ?"},
        {"from": "gpt", "value": "no"},
        {"from": "human", "value": "what modality is this ?"},
        {"from": "gpt", "value": "x - ray"},
    ]
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"id": "c1", "image": "images/x.png", "conversations": turns}]))
    (record,) = read_vqa(path, "train")
    return record


def test_every_assistant_turn_is_supervised_with_its_context(tokenizer, image_processor, conversation):
    collator = LlavaCollator(tokenizer, image_processor, get_template("vicuna_v1"), num_image_tokens=2)
    batch = collator([conversation])
    system = tokenizer.tokenize(get_template("vicuna_v1").prompt_format.split(" USER:")[0])
    first = ["<s>", *system, "USER", ":", "<image>", "<image>", "which", "organ", "?", "ASSISTANT", ":"]
    second = ["USER", ":", "is", "the", "heart", "enlarged", "?", "ASSISTANT", ":"]
    third = ["USER", ":", "what", "modality", "is", "this", "?", "ASSISTANT", ":"]
    answers = [["lung", "</s>"], ["no", "</s>"], ["x", "-", "ray", "</s>"]]
    expected_ids, expected_labels = [], []
    for prompt, answer in zip((first, second, third), answers):
        expected_ids += _ids(tokenizer, prompt + answer)
        expected_labels += [M] * len(prompt) + _ids(tokenizer, answer)
    assert batch["input_ids"].tolist() == [expected_ids]
    assert batch["labels"].tolist() == [expected_labels]


def test_generation_asks_the_last_question_after_the_earlier_turns(tokenizer, image_processor, conversation):
    collator = LlavaCollator(
        tokenizer, image_processor, get_template("mistral_instruct"), num_image_tokens=1, train=False
    )
    batch = collator([conversation])
    expected = ["<s>", "[", "INST", "]", "<image>", "which", "organ", "?", "[/", "INST", "]", "lung", "</s>"]
    expected += ["[", "INST", "]", "is", "the", "heart", "enlarged", "?", "[/", "INST", "]", "no", "</s>"]
    expected += ["[", "INST", "]", "what", "modality", "is", "this", "?", "[/", "INST", "]"]
    assert batch["input_ids"].tolist() == [_ids(tokenizer, expected)]
    assert "labels" not in batch


def test_only_the_last_question_is_cut_to_fit(tokenizer, image_processor, conversation):
    collator = LlavaCollator(
        tokenizer, image_processor, get_template("demo"), num_image_tokens=1, max_length=32
    )
    with pytest.warns(UserWarning, match="'c1': question cut from 5 to 3 tokens"):
        batch = collator([conversation])
    ids = batch["input_ids"].tolist()[0]
    assert len(ids) == 32
    assert ids[-11:] == _ids(
        tokenizer, ["Q", ":", "what", "modality", "is", "A", ":", "x", "-", "ray", "</s>"]
    )
    # earlier turns and every answer are whole
    labels = [t for t in batch["labels"].tolist()[0] if t != M]
    assert labels == _ids(tokenizer, ["lung", "</s>", "no", "</s>", "x", "-", "ray", "</s>"])
    with pytest.raises(ValueError, match="earlier turns and answers alone take 29 tokens"):
        LlavaCollator(tokenizer, image_processor, get_template("demo"), num_image_tokens=1, max_length=28)(
            [conversation]
        )


def test_blip_vqa_refuses_a_conversation_rather_than_drop_its_context(
    tokenizer, image_processor, conversation
):
    from medtune.data import BlipVQACollator

    collator = BlipVQACollator(tokenizer, image_processor, decoder_start_token_id=1, eos_token_id=2)
    with pytest.raises(
        ValueError, match="'c1' is a multi-turn conversation, but BLIP-VQA answers one question"
    ):
        collator([conversation])
