"""Collate records for any checkpoint with a processor and a chat template: its own prompt format, its own images.

The prompt is what the checkpoint's chat template renders for one user turn (an image, then the question) with
the generation prompt; for training, the template renders the assistant's answer too and the labels supervise
exactly the characters the template adds after the prompt (the answer and its end-of-turn marker). The processor
then expands the image placeholders (dynamic resolution for Qwen2.5-VL, image splitting for Idefics3, ...), so the
image tokens, pixel values and whatever else the model takes (image_grid_thw, pixel_attention_mask,
token_type_ids) come from the checkpoint's own code.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from medtune.data.collators import IGNORE_INDEX, _sample
from medtune.data.images import load_image
from medtune.data.instructions import REPORT_INFERENCE_INSTRUCTION, report_instruction
from medtune.data.records import ReportRecord, VQARecord


def user_turn(question: str, image: bool = True) -> list[dict]:
    """Return the one-turn conversation a sample asks: an image (first turns only), then the question."""
    content = [{"type": "image"}] if image else []
    return [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]


def _reply(answer: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": answer}]}


def render(processor, question: str, answer: str | None) -> tuple[str, str]:
    """Return (prompt up to where the answer starts, the answer as the chat template writes it; "" for None)."""
    text, spans = render_conversation(processor, question, answer)
    return (text, "") if not spans else (text[: spans[0][0]], text[spans[0][0] :])


def render_conversation(
    processor, question: str, answer: str | None, history: Sequence[Sequence[str]] = ()
) -> tuple[str, list[tuple[int, int]]]:
    """Return the conversation as the chat template renders it, and the (start, end) characters of each answer.

    history holds earlier (question, answer) turns, rendered first with the image in the first user turn;
    with answer None the text ends with the generation prompt after the last question (no span for it).
    """
    turns = [*((q, a) for q, a in history), (question, answer)]
    messages: list[dict] = []
    spans: list[tuple[int, int]] = []
    text = ""
    for k, (q, a) in enumerate(turns):
        messages += user_turn(q, image=k == 0)
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if not prompt.startswith(text):
            raise _not_a_prefix(text, prompt)
        text = prompt
        if a is None:
            break
        messages.append(_reply(a))
        full = processor.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt):
            raise _not_a_prefix(prompt, full)
        spans.append((len(prompt), len(full)))
        text = full
    return text, spans


def _not_a_prefix(prompt: str, full: str) -> ValueError:
    return ValueError(
        "the checkpoint's chat template renders the conversation with an answer differently from the prompt "
        f"it renders for generation ({prompt[-40:]!r} is not where {full[: len(prompt)][-40:]!r} is); "
        "medtune supervises the text after the prompt, so it needs a template whose prompt is a prefix"
    )


class ChatTemplateCollator:
    """Build batches through a processor: input_ids, attention_mask, labels (train), the image inputs, qids."""

    def __init__(self, processor, *, train: bool = True, seed: int = 0):
        if not getattr(processor, "chat_template", None):
            raise ValueError("the processor has no chat template; load the checkpoint's own processor")
        self.processor, self.train = processor, train
        self.rng = random.Random(seed)
        # Generation continues from the last prompt token, so prompts are left-padded for it.
        self.padding_side = "right" if train else "left"
        self.truncated = 0  # nothing is ever truncated: image tokens and answers must stay whole
        self.truncated_ids: list[str] = []

    def texts(self, question: str, answer: str | None) -> tuple[str, str]:
        """Return (prompt, answer text) of one sample as the chat template renders them."""
        return render(self.processor, question, answer if self.train else None)

    def conversation(self, record: VQARecord | ReportRecord, question: str, answer: str) -> tuple[str, list]:
        """Return (text, answer spans) of a record; a VQA record's extra['history'] turns come first."""
        history = record.extra.get("history", ()) if isinstance(record, VQARecord) else ()
        return render_conversation(self.processor, question, answer if self.train else None, history)

    def length(self, record: VQARecord | ReportRecord) -> int:
        """Return the record's text tokens as the template renders them (image tokens left out; for ordering)."""
        _, question, answer, _ = _sample(record, REPORT_INFERENCE_INSTRUCTION)
        text, _ = self.conversation(record, question, answer)
        return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, records: list[VQARecord | ReportRecord]) -> dict:
        """Return the processor's tensors for the batch (input_ids: (batch, seq)), labels when training, qids."""
        texts, spans, images, qids = [], [], [], []
        for record in records:
            instruction = REPORT_INFERENCE_INSTRUCTION
            if isinstance(record, ReportRecord) and self.train:
                instruction = report_instruction(self.rng)
            qid, question, answer, image = _sample(record, instruction)
            text, answer_spans = self.conversation(record, question, answer)
            texts.append(text)
            # Counted from the end: expanding the image placeholders lengthens only what comes before.
            spans.append([(len(text) - start, len(text) - end) for start, end in answer_spans])
            images.append([load_image(image, qid)])
            qids.append(qid)
        tokenizer = self.processor.tokenizer
        side = tokenizer.padding_side
        tokenizer.padding_side = self.padding_side
        try:
            # The template writes the special tokens (BOS included) itself, so the tokenizer must add none.
            batch = self.processor(
                text=texts,
                images=images,
                padding=True,
                add_special_tokens=False,
                return_offsets_mapping=self.train,
                return_tensors="pt",
            )
        finally:
            tokenizer.padding_side = side
        batch = dict(batch)
        if self.train:
            batch["labels"] = answer_labels(batch, spans, texts, self.processor)
            batch.pop("offset_mapping", None)
        batch["qids"] = qids
        return batch


def answer_labels(
    batch: dict, spans: list[list[tuple[int, int]]], texts: list[str], processor
) -> torch.Tensor:
    """Return labels (batch, seq): the input ids of the tokens inside each text's answer spans.

    A span is (characters from its start to the text's end, characters from its end to the text's end).
    Offsets are into the text after the processor expanded its image placeholders, which changes only what
    precedes the first answer; so each answer sits the same number of characters from every text's end.
    """
    ids, mask, offsets = batch["input_ids"], batch["attention_mask"], batch["offset_mapping"]
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row in range(ids.shape[0]):
        real = mask[row].bool()
        ends = offsets[row, :, 1][real]
        starts = offsets[row, :, 0][real]
        text_end = int(ends.max()) if ends.numel() else 0
        positions = real.nonzero().squeeze(1)
        for from_start, from_end in spans[row]:
            answer_start, answer_end = text_end - from_start, text_end - from_end
            # a token belongs to the answer when it ends inside it (a token straddling the boundary is supervised)
            keep = (ends > answer_start) & (ends <= answer_end) & ~((starts == 0) & (ends == 0))
            labels[row, positions[keep]] = ids[row, positions[keep]]
            if not keep.any():
                raise ValueError(
                    f"sample {row}: no token of the answer {texts[row][len(texts[row]) - from_start :]!r} was found"
                )
    return labels
