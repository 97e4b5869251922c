"""What medtune tunes on is what the ecosystem serves: collator ids equal the exported processor's, SentencePiece too.

The tokenizer is LLaMA's own class (a Metaspace BPE with byte fallback, as LLaVA-Med's 7B bases have) over a
vocabulary trained offline on the templates' words. A SentencePiece tokenizer marks a word's start by what comes
before it, so ids built from separately tokenised pieces differ from the ids of the whole rendered text; a
served prompt is always the whole text, tokenised once by LlavaProcessor after the chat template renders it.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from medtune.data import IGNORE_INDEX, LlavaCollator, VQARecord, get_template
from medtune.data.templates import TEMPLATES
from medtune.tuning.export import chat_template

LLAVA_TEMPLATES = [name for name, t in TEMPLATES.items() if t.image_placeholder is not None]
QUESTION = "is the heart enlarged in this chest x-ray?"
HISTORY = [("which organ is shown?", "the lung"), ("what modality is used here?", "x-ray")]
ANSWER = "yes, the heart is enlarged."
CORPUS = [
    *(t.prompt_format + " " + t.answer_format for t in TEMPLATES.values()),
    *(t.turn_format for t in TEMPLATES.values() if t.turn_format),
    QUESTION,
    ANSWER,
    *(q + " " + a for q, a in HISTORY),
]


def _sentencepiece_tokenizer(*, legacy: bool, adds_bos: bool):
    """Return a LlamaTokenizer over a BPE vocabulary trained on CORPUS, with <pad> and <image> special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    # SentencePiece learns pieces within words: a piece may start with the word marker, never span two words.
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always", split=True)
    # Small enough that long words are several pieces, so a cut question can end inside a word.
    trainer = trainers.BpeTrainer(vocab_size=220, special_tokens=["<unk>", "<s>", "</s>"])
    trainer_tok.train_from_iterator(CORPUS * 2, trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    # legacy=True puts the word marker before every text piece (even after a special token), as the
    # original LLaMA tokenizer did; legacy=False only before the text's start (transformers' default).
    tokenizer = LlamaTokenizer(vocab=model["vocab"], merges=merges, legacy=legacy, add_bos_token=adds_bos)
    tokenizer.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<image>"]})
    return tokenizer


TOKENIZERS = {
    (legacy, adds_bos): _sentencepiece_tokenizer(legacy=legacy, adds_bos=adds_bos)
    for legacy in (False, True)
    for adds_bos in (False, True)
}
VARIANTS = pytest.mark.parametrize(
    "variant", list(TOKENIZERS), ids=[f"legacy={a}-adds_bos={b}" for a, b in TOKENIZERS]
)


def _processor(tokenizer, template):
    """Return the LlavaProcessor export writes: 16 px images, 8 px patches, 4 image tokens after CLS is dropped."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    from medtune.data.collators import prompt_bos

    return LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
        chat_template=chat_template(template, bos=bool(prompt_bos(tokenizer, template))),
    )


def _messages(turns: list[tuple[str, str | None]]) -> list[dict]:
    messages = []
    for k, (question, answer) in enumerate(turns):
        image = [{"type": "image"}] if k == 0 else []
        messages.append({"role": "user", "content": [*image, {"type": "text", "text": question}]})
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def _served(processor, image, turns) -> list[int]:
    """Return the ids a user gets: the chat template's text, then the processor on that text and the image."""
    text = processor.apply_chat_template(_messages(turns), add_generation_prompt=True)
    return processor(images=image, text=text, return_tensors="pt")["input_ids"][0].tolist()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (20, 24), (90, 40, 200)).save(path)
    return path


def _collate(tokenizer, template, image, turns, *, train: bool, max_length: int = 512) -> dict:
    (*history, (question, answer)) = turns
    record = VQARecord("q1", image, question, answer or "", "OPEN", answer or "", "test", {})
    if history:
        record.extra["history"] = [list(pair) for pair in history]
    images = _processor(tokenizer, template).image_processor
    collator = LlavaCollator(
        tokenizer, images, template, num_image_tokens=4, max_length=max_length, train=train
    )
    batch = collator([record])
    batch["collator"] = collator
    return batch


@VARIANTS
@pytest.mark.parametrize("name", LLAVA_TEMPLATES)
@pytest.mark.parametrize("turns", [1, 3], ids=["one-turn", "three-turns"])
def test_inference_prompt_ids_are_the_served_prompt_ids(variant, name, turns, image):
    tokenizer, template = TOKENIZERS[variant], get_template(name)
    asked = [*HISTORY, (QUESTION, None)][-turns:]
    batch = _collate(tokenizer, template, image, asked, train=False)
    served = _served(_processor(tokenizer, template), Image.open(image), asked)
    assert batch["input_ids"][0].tolist() == served
    assert served.count(tokenizer.convert_tokens_to_ids("<image>")) == 4
    assert served[:2].count(tokenizer.bos_token_id) == (1 if template.add_bos or variant[1] else 0)


@VARIANTS
@pytest.mark.parametrize("name", LLAVA_TEMPLATES)
def test_a_question_cut_to_fit_is_served_as_the_same_ids(variant, name, image):
    tokenizer, template = TOKENIZERS[variant], get_template(name)
    whole = _served(_processor(tokenizer, template), Image.open(image), [(QUESTION, None)])
    max_length = len(whole) - 5
    with pytest.warns(UserWarning, match=r"'q1': question cut from \d+ to \d+ tokens"):
        batch = _collate(tokenizer, template, image, [(QUESTION, None)], train=False, max_length=max_length)
    ids = batch["input_ids"][0].tolist()
    assert len(ids) <= max_length and batch["collator"].truncated == 1
    processor = _processor(tokenizer, template)
    cuts = [
        n
        for n in range(len(QUESTION))
        if _served(processor, Image.open(image), [(QUESTION[:n], None)]) == ids
    ]
    assert cuts, "the cut prompt is not what any shorter question is served as"
    # cut where the whole question's pieces end: here as many as fit, re-tokenised to the same count
    assert len(ids) == max_length


@VARIANTS
@pytest.mark.parametrize("name", LLAVA_TEMPLATES)
def test_training_ids_are_the_whole_conversation_and_labels_its_answers(variant, name, image):
    tokenizer, template = TOKENIZERS[variant], get_template(name)
    turns = [*HISTORY, (QUESTION, ANSWER)]
    batch = _collate(tokenizer, template, image, turns, train=True)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    processor = _processor(tokenizer, template)
    full = processor.apply_chat_template(_messages(turns))
    assert ids == processor(images=Image.open(image), text=full)["input_ids"][0]
    # each answer's tokens (and its EOS) are supervised, everything else masked; every prompt is the served one
    expected = [IGNORE_INDEX] * len(ids)
    for k in range(len(turns)):
        prompt = _served(processor, Image.open(image), [*turns[:k], (turns[k][0], None)])
        assert ids[: len(prompt)] == prompt
        answered = processor.apply_chat_template(_messages(turns[: k + 1]))
        end = len(processor(images=Image.open(image), text=answered)["input_ids"][0])
        expected[len(prompt) : end] = ids[len(prompt) : end]
    assert labels == expected
    said = tokenizer.decode([t for t in labels if t != IGNORE_INDEX])
    assert [part.strip() for part in said.split("</s>")] == ["the lung", "x-ray", ANSWER, ""]
