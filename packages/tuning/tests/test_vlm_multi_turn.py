"""A multi-turn conversation through the vlm family's chat-template collator: every answer supervised, context kept."""

from __future__ import annotations

import pytest

from medtune.core_models import default_preset, load
from medtune.core_models.vlm_tiny import write_tiny_vlm
from medtune.data import VQARecord
from medtune.data.chat_collator import ChatTemplateCollator
from medtune.data.images import load_image

ARCHS = ("tiny-gemma3", "tiny-qwen2.5-vl", "tiny-idefics3")
# What each release's chat template writes for an assistant answer (as in test_vlm.py).
ANSWER_RENDERING = {
    "tiny-gemma3": "{}<end_of_turn>\n",
    "tiny-qwen2.5-vl": "{}<|im_end|>\n",
    "tiny-idefics3": " {}<end_of_utterance>\n",
}
TURNS = [("Which organ is shown?", "lung"), ("Is it enlarged?", "no"), ("What modality?", "chest x-ray")]


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    Image.new("L", (40, 36), 90).save(folder / "x.png")
    (q, a), history = TURNS[-1], [list(t) for t in TURNS[:-1]]
    return VQARecord("c1", folder / "x.png", q, a, "OPEN", a, "llava", {"history": history})


@pytest.fixture(scope="module")
def processors(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    texts = [t for pair in TURNS for t in pair]
    out = {}
    for arch in ARCHS:
        path = write_tiny_vlm(arch, root / arch, texts)
        out[arch] = load(default_preset("vlm", path), path).processor
    return out


def _messages(turns, answer_last: bool):
    messages = []
    for k, (q, a) in enumerate(turns):
        image = [{"type": "image"}] if k == 0 else []
        messages.append({"role": "user", "content": [*image, {"type": "text", "text": q}]})
        if answer_last or k < len(turns) - 1:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
    return messages


@pytest.mark.parametrize("arch", ARCHS)
def test_every_answer_of_the_conversation_is_supervised(processors, record, arch):
    processor = processors[arch]
    batch = ChatTemplateCollator(processor, train=True)([record])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    # the row is the processor's own encoding of the template's rendering of the whole conversation
    text = processor.apply_chat_template(_messages(TURNS, True), tokenize=False)
    image = [[load_image(record.image, record.qid)]]
    assert ids.tolist() == list(
        processor(text=[text], images=image, add_special_tokens=False)["input_ids"][0]
    )
    # supervised: exactly each answer as the template writes it, in order; every prompt and image masked
    runs, current = [], []
    for token, label in zip(ids.tolist(), labels.tolist()):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    decoded = [processor.tokenizer.decode(run) for run in runs]
    assert decoded == [ANSWER_RENDERING[arch].format(answer) for _, answer in TURNS]


@pytest.mark.parametrize("arch", ARCHS)
def test_generation_asks_the_last_question_after_the_earlier_turns(processors, record, arch):
    processor = processors[arch]
    batch = ChatTemplateCollator(processor, train=False)([record])
    prompt = processor.apply_chat_template(
        _messages(TURNS, False), add_generation_prompt=True, tokenize=False
    )
    image = [[load_image(record.image, record.qid)]]
    expected = processor(text=[prompt], images=image, add_special_tokens=False)["input_ids"][0]
    assert batch["input_ids"][0].tolist() == list(expected) and "labels" not in batch
