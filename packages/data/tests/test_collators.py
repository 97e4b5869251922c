from pathlib import Path

import pytest
import torch

from medtune.data import (
    IGNORE_INDEX,
    BlipVQACollator,
    DataError,
    LlavaCollator,
    ReportRecord,
    VQARecord,
    get_template,
)

M = IGNORE_INDEX
SYSTEM = [
    "A",
    "chat",
    "between",
    "a",
    "curious",
    "user",
    "and",
    "an",
    "artificial",
    "intelligence",
    "assistant",
    ".",
    "The",
    "assistant",
    "gives",
    "helpful",
    ",",
    "detailed",
    ",",
    "and",
    "polite",
    "answers",
    "to",
    "the",
    "user",
    "'",
    "s",
    "questions",
    ".",
]


def _record(tmp_path, builders, qid, question, answer):
    image = builders.make_image(tmp_path / f"{qid}.png", mode="L", size=(20, 24))
    return VQARecord(qid, image, question, answer, "CLOSED", answer, "test", {})


def _ids(tokenizer, tokens):
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert tokenizer.unk_token_id not in ids, "test vocabulary misses a token"
    return ids


@pytest.mark.parametrize(
    ("name", "prompt_tokens"),
    [
        ("demo", ["<image>"] * 3 + ["Q", ":", "is", "the", "heart", "enlarged", "?", "A", ":"]),
        (
            "vicuna_v1",
            ["<s>", *SYSTEM, "USER", ":"]
            + ["<image>"] * 3
            + ["is", "the", "heart", "enlarged", "?", "ASSISTANT", ":"],
        ),
        (
            "mistral_instruct",
            ["<s>", "[", "INST", "]"]
            + ["<image>"] * 3
            + ["is", "the", "heart", "enlarged", "?", "[/", "INST", "]"],
        ),
    ],
)
def test_exact_label_mask_per_template(tmp_path, builders, tokenizer, image_processor, name, prompt_tokens):
    collator = LlavaCollator(tokenizer, image_processor, get_template(name), num_image_tokens=3)
    batch = collator([_record(tmp_path, builders, "q1", "is the heart enlarged?", "no")])
    prompt, answer = _ids(tokenizer, prompt_tokens), _ids(tokenizer, ["no", "</s>"])
    assert batch["input_ids"].tolist() == [prompt + answer]
    assert batch["labels"].tolist() == [[M] * len(prompt) + answer]
    assert batch["attention_mask"].tolist() == [[1] * (len(prompt) + 2)]
    assert (batch["input_ids"] == tokenizer.convert_tokens_to_ids("<image>")).sum() == 3
    assert batch["pixel_values"].shape == (1, 3, 16, 16) and batch["qids"] == ["q1"]


def test_right_padding_for_training(tmp_path, builders, tokenizer, image_processor):
    collator = LlavaCollator(tokenizer, image_processor, get_template("demo"), num_image_tokens=2)
    short = _record(tmp_path, builders, "s", "which organ?", "lung")
    long = _record(tmp_path, builders, "l", "is the heart enlarged?", "yes")
    batch = collator([short, long])
    pad = tokenizer.pad_token_id
    # short prompt: 2 image + Q : which organ ? A : = 9, answer lung </s>; long is 2 longer
    assert batch["input_ids"][0, -2:].tolist() == [pad, pad]
    assert batch["attention_mask"].tolist()[0] == [1] * 11 + [0, 0]
    assert batch["labels"].tolist()[0] == [M] * 9 + _ids(tokenizer, ["lung", "</s>"]) + [M, M]
    assert batch["labels"].tolist()[1] == [M] * 11 + _ids(tokenizer, ["yes", "</s>"])


def test_generation_is_prompt_only_left_padded(tmp_path, builders, tokenizer, image_processor):
    collator = LlavaCollator(
        tokenizer, image_processor, get_template("vicuna_v1"), num_image_tokens=2, train=False
    )
    short = _record(tmp_path, builders, "s", "which organ?", "lung")
    long = _record(tmp_path, builders, "l", "is the heart enlarged?", "yes")
    batch = collator([short, long])
    assert "labels" not in batch
    pad, last = tokenizer.pad_token_id, _ids(tokenizer, ["ASSISTANT", ":"])
    assert batch["input_ids"][0, :2].tolist() == [pad, pad] and batch["attention_mask"][0, :2].tolist() == [
        0,
        0,
    ]
    assert batch["input_ids"][:, -2:].tolist() == [last, last]  # no answer, both flush right
    assert tokenizer.convert_tokens_to_ids("</s>") not in batch["input_ids"].tolist()[1]


def test_truncation_cuts_the_question_never_the_answer(tmp_path, builders, tokenizer, image_processor):
    collator = LlavaCollator(
        tokenizer, image_processor, get_template("demo"), num_image_tokens=3, max_length=12
    )
    record = _record(tmp_path, builders, "long-q", "is the heart enlarged?", "no")
    with pytest.warns(UserWarning, match="'long-q': question cut from 5 to 3 tokens"):
        batch = collator([record])
    assert batch["input_ids"].tolist() == [
        _ids(tokenizer, ["<image>"] * 3 + ["Q", ":", "is", "the", "heart", "A", ":", "no", "</s>"])
    ]
    assert batch["labels"].tolist()[0][-2:] == _ids(tokenizer, ["no", "</s>"])
    assert collator.truncated == 1 and collator.truncated_ids == ["long-q"]


def test_no_room_for_the_answer_is_an_error(tmp_path, builders, tokenizer, image_processor):
    collator = LlavaCollator(
        tokenizer, image_processor, get_template("demo"), num_image_tokens=8, max_length=10
    )
    with pytest.raises(DataError, match=r"id 'q', field 'answer': .*more than the 10 .*shorten that answer"):
        collator([_record(tmp_path, builders, "q", "which organ?", "lung")])


def test_llava_med_v1_image_positions_are_wrapped(tmp_path, builders, tokenizer, image_processor):
    # v1 checkpoints mark images <im_start> <im_patch> x N <im_end> (mm_use_im_start_end).
    tokenizer.add_special_tokens({"additional_special_tokens": ["<im_patch>", "<im_start>", "<im_end>"]})
    collator = LlavaCollator(
        tokenizer,
        image_processor,
        get_template("demo"),
        num_image_tokens=3,
        image_token="<im_patch>",
        image_wrap=("<im_start>", "<im_end>"),
    )
    batch = collator([_record(tmp_path, builders, "q1", "is the heart enlarged?", "no")])
    image = ["<im_start>"] + ["<im_patch>"] * 3 + ["<im_end>"]
    prompt = _ids(tokenizer, [*image, "Q", ":", "is", "the", "heart", "enlarged", "?", "A", ":"])
    assert batch["input_ids"].tolist() == [prompt + _ids(tokenizer, ["no", "</s>"])]
    assert batch["labels"].tolist()[0][: len(prompt)] == [M] * len(prompt)


def test_missing_image_wrap_token_names_it(tokenizer, image_processor):
    with pytest.raises(ValueError, match="no '<im_start>' or '<im_end>' token to wrap"):
        LlavaCollator(
            tokenizer,
            image_processor,
            get_template("demo"),
            num_image_tokens=2,
            image_wrap=("<im_start>", "<im_end>"),
        )


def test_missing_image_token_in_tokenizer(tokenizer, image_processor):
    with pytest.raises(ValueError, match="no '<img>' token"):
        LlavaCollator(
            tokenizer, image_processor, get_template("demo"), num_image_tokens=2, image_token="<img>"
        )


def test_report_records_use_instructions(tmp_path, builders, tokenizer, image_processor):
    image = builders.make_image(tmp_path / "r.png")
    record = ReportRecord("s1", [Path(image)], "the heart is enlarged .", "test", {})
    infer = LlavaCollator(tokenizer, image_processor, get_template("demo"), num_image_tokens=1, train=False)
    prompt = tokenizer.convert_ids_to_tokens(infer([record])["input_ids"][0].tolist())
    assert prompt[3:14] == [
        "Describe",
        "the",
        "given",
        "chest",
        "x",
        "-",
        "ray",
        "image",
        "in",
        "detail",
        ".",
    ]
    train = LlavaCollator(tokenizer, image_processor, get_template("demo"), num_image_tokens=1, seed=3)
    batch = train([record])
    again = LlavaCollator(tokenizer, image_processor, get_template("demo"), num_image_tokens=1, seed=3)(
        [record]
    )
    assert torch.equal(batch["input_ids"], again["input_ids"]) and batch["qids"] == ["s1"]
    answer = [t for t, lab in zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist()) if lab != M]
    assert answer == _ids(tokenizer, ["the", "heart", "is", "enlarged", ".", "</s>"])


def test_batch_runs_through_a_tiny_llava(tmp_path, builders, tokenizer, image_processor):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config).eval()
    # 16 px / 8 px patches = 4 features once the CLS feature is dropped ("default" strategy)
    collator = LlavaCollator(tokenizer, image_processor, get_template("vicuna_v1"), num_image_tokens=4)
    batch = collator(
        [
            _record(tmp_path, builders, "a", "which organ?", "lung"),
            _record(tmp_path, builders, "b", "is the heart enlarged?", "no"),
        ]
    )
    batch.pop("qids")
    out = model(**batch)
    assert torch.isfinite(out.loss)


@pytest.fixture
def bert_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[DEC]"]
    vocab = {
        t: k
        for k, t in enumerate([*specials, "which", "organ", "?", "is", "it", "lung", "no", "left", "upper"])
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        bos_token="[DEC]",
    )


def test_blip_vqa_collator(tmp_path, builders, bert_tokenizer, image_processor):
    collator = BlipVQACollator(bert_tokenizer, image_processor, max_question_length=8, max_answer_length=6)
    records = [
        _record(tmp_path, builders, "a", "which organ?", "left upper lung"),
        _record(tmp_path, builders, "b", "is it lung?", "no"),
    ]
    batch = collator(records)
    assert batch["input_ids"].tolist() == [[2, 5, 6, 7, 3, 0], [2, 8, 9, 10, 7, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6]
    assert batch["decoder_input_ids"].tolist() == [[4, 12, 13, 10, 3], [4, 11, 3, 0, 0]]
    assert batch["labels"].tolist() == [[4, 12, 13, 10, 3], [4, 11, 3, M, M]]
    assert batch["decoder_attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 0, 0]]

    from transformers import BlipConfig, BlipForQuestionAnswering

    torch.manual_seed(0)
    config = BlipConfig(
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
        },
        text_config={
            "vocab_size": len(bert_tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "encoder_hidden_size": 16,
            "bos_token_id": 4,
            "pad_token_id": 0,
            "sep_token_id": 3,
        },
    )
    model = BlipForQuestionAnswering(config).eval()
    batch.pop("qids")
    assert torch.isfinite(model(**batch).loss)


def test_blip_answer_too_long_is_an_error(tmp_path, builders, bert_tokenizer, image_processor):
    collator = BlipVQACollator(bert_tokenizer, image_processor, max_answer_length=3)
    with pytest.raises(DataError, match="id 'a', field 'answer': the answer takes 5 tokens, more than the 3"):
        collator([_record(tmp_path, builders, "a", "which organ?", "left upper lung")])
