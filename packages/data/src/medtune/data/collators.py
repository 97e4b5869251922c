"""Collators: records -> padded tensors with the image tokens expanded and only the answer tokens supervised."""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from typing import Literal

import torch

from medtune.data.images import load_image
from medtune.data.instructions import REPORT_INFERENCE_INSTRUCTION, report_instruction
from medtune.data.records import DataError, Rejection, ReportRecord, VQARecord
from medtune.data.templates import PromptTemplate

IGNORE_INDEX = -100


def _sample(record: VQARecord | ReportRecord, instruction: str) -> tuple[str, str, str, object]:
    """Return (id, question, answer, image path) of a VQA record, or of a report record asked instruction."""
    if isinstance(record, ReportRecord):
        # LLaVA-style models take one image; the first listed view is the study's primary image.
        return record.study_id, instruction, record.report, record.images[0]
    return record.qid, record.question, record.answer, record.image


def _token_id(tokenizer, token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        return None
    return tid


def prompt_bos(tokenizer, template: PromptTemplate) -> str:
    """Return the BOS text a prompt's text starts with: "" where the template wants none or the tokenizer adds it.

    A LLaMA-style tokenizer puts BOS before every text it encodes; writing it in the text as well would give the
    served prompt two. The exported chat template writes exactly this text, so both sides agree.
    """
    if not template.add_bos or tokenizer.bos_token is None:
        return ""
    adds_bos = tokenizer("", add_special_tokens=True)["input_ids"][:1] == [tokenizer.bos_token_id]
    return "" if adds_bos else tokenizer.bos_token


def _ending_in(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Return the indices of the tokens that end inside characters (start, end]; zero-width tokens end nowhere."""
    return [i for i, (s, e) in enumerate(offsets) if start < e <= end and s < e]


def _pad(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    width = max(len(r) for r in rows)
    padded = [
        r + [value] * (width - len(r)) if side == "right" else [value] * (width - len(r)) + r for r in rows
    ]
    return torch.tensor(padded, dtype=torch.long)


def too_long(sample_id: str, why: str) -> DataError:
    """Return the record error for a sample whose answer cannot fit (answers are never truncated)."""
    return DataError(
        Rejection(
            "the training data",
            None,
            sample_id,
            "answer",
            f"{why}; shorten that answer or remove the record (answers and image tokens are never cut, "
            "since a cut answer would teach the model to stop mid-sentence).",
        )
    )


class LlavaCollator:
    """Build LLaVA batches: input_ids, attention_mask, labels (train), pixel_values, qids."""

    def __init__(
        self,
        tokenizer,
        image_processor,
        template: PromptTemplate,
        num_image_tokens: int,
        image_token: str = "<image>",
        image_wrap: tuple[str, str] | None = None,
        max_length: int = 512,
        padding_side: Literal["right", "left"] = "right",
        train: bool = True,
        seed: int = 0,
    ):
        if template.image_placeholder is None:
            raise ValueError(f"template {template.name!r} has no image placeholder; LLaVA needs one.")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                "the LLaVA collator needs a fast tokenizer (one backed by the tokenizers library), which "
                "reports where each token sits in the text; load the checkpoint's tokenizer with AutoTokenizer."
            )
        self.tokenizer, self.image_processor, self.template = tokenizer, image_processor, template
        self.num_image_tokens, self.max_length, self.train = num_image_tokens, max_length, train
        # Generation continues from the last prompt token, so prompts must end flush right.
        self.padding_side = padding_side if train else "left"
        self.image_token_id = _token_id(tokenizer, image_token)
        if self.image_token_id is None:
            raise ValueError(
                f"the tokenizer has no {image_token!r} token; add it as a special token "
                "(tokenizer.add_special_tokens) and resize the model's embeddings."
            )
        # LLaVA-Med v1 prompts put <im_start> before an image's positions and <im_end> after them.
        self.image_ids = [self.image_token_id] * num_image_tokens
        if image_wrap is not None:
            start_end = [_token_id(tokenizer, token) for token in image_wrap]
            missing = [token for token, tid in zip(image_wrap, start_end) if tid is None]
            if missing:
                raise ValueError(
                    f"the tokenizer has no {' or '.join(map(repr, missing))} token to wrap the image "
                    "positions in (the checkpoint's config sets mm_use_im_start_end); use the release's "
                    "own tokenizer, which has them."
                )
            self.image_ids = [start_end[0], *self.image_ids, start_end[1]]
        self.image_token = image_token
        self.eos_text = tokenizer.eos_token or template.eos
        self.bos_text = prompt_bos(tokenizer, template)
        # Without a pad token, rows are padded with EOS (masked out by attention_mask and labels).
        eos_ids = tokenizer(self.eos_text, add_special_tokens=False)["input_ids"]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[-1]
        self.rng = random.Random(seed)
        self.truncated = 0
        self.truncated_ids: list[str] = []

    def render(
        self, turns: Sequence[tuple[str, str | None]]
    ) -> tuple[str, tuple[int, int], list[tuple[int, int]]]:
        """Return (the conversation's text, the last question's (start, end) characters, each answer's).

        The text is what the exported chat template renders (BOS, image placeholder as the image token, answers
        with their end-of-turn marker); an answer's characters include that marker.
        """
        text, question, answers = self.bos_text, (0, 0), []
        for k, (q, a) in enumerate(turns):
            head, q, tail = self.template.prompt_parts(q) if k == 0 else self.template.turn_parts(q)
            head, tail = (
                part.replace(self.template.image_placeholder, self.image_token) for part in (head, tail)
            )
            question = (len(text) + len(head), len(text) + len(head) + len(q))
            text += head + q + tail
            if a is not None:
                body = self.template.answer_body(a) + self.eos_text
                answers.append((len(text), len(text) + len(body)))
                text += body
        return text, question, answers

    def _tokens(self, text: str) -> tuple[list[int], list[tuple[int, int]], int]:
        """Return (ids, character offsets, length once each image token is expanded) of the whole text."""
        # With the tokenizer's own special tokens (BOS where it adds one), as a processor encodes a served prompt.
        encoded = self.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        extra = ids.count(self.image_token_id) * (len(self.image_ids) - 1)
        return ids, [tuple(o) for o in encoded["offset_mapping"]], len(ids) + extra

    def encode(
        self,
        sample_id: str,
        question: str,
        answer: str | None,
        history: Sequence[Sequence[str]] = (),
    ) -> tuple[list[int], list[int]]:
        """Return (input_ids, labels) of one sample; the last question is cut to fit max_length, nothing else.

        history holds the conversation's earlier (question, answer) turns: they come first, as LLaVA trains
        a conversation, and every answer is supervised while every prompt (and the image) is masked.

        The ids are the whole conversation's text tokenised at once, as a user's processor tokenises what the
        exported chat template renders: a SentencePiece tokenizer marks word starts by what precedes them, so
        pieces tokenised apart (template, question, answer) would not give the same ids. Answers are found by
        their characters: a token is supervised when it ends inside an answer (as the chat-template collator
        does), which for medtune's templates (answers start with a space, turns end with the EOS token) is
        exactly the answer's own tokens, and the training prompt is then the inference prompt token for token.
        """
        turns = [*((q, a) for q, a in history), (question, answer)]
        text, (start, end), answers = self.render(turns)
        ids, offsets, length = self._tokens(text)
        # The question's tokens are found by their characters in the one tokenisation that is served: the head,
        # or head and question, tokenised alone is no prefix of it under SentencePiece (a space before the
        # question is a piece of its own there, part of the question's first piece in the whole text).
        asked = _ending_in(offsets, start, end)
        fixed = length - len(asked)
        if fixed > self.max_length:
            raise too_long(
                sample_id,
                f"the image tokens, template, earlier turns and answers alone take {fixed} tokens, more than "
                f"the {self.max_length} a sample may have",
            )
        if length > self.max_length:
            ids, offsets, answers, kept = self._cut_question(
                sample_id, turns, text, start, asked, offsets, length
            )
            warnings.warn(
                f"sample {sample_id!r}: question cut from {len(asked)} to {kept} tokens "
                f"to fit max_length={self.max_length}.",
                stacklevel=3,
            )
            self.truncated += 1
            self.truncated_ids.append(sample_id)
        supervised = {i for a_start, a_end in answers for i in _ending_in(offsets, a_start, a_end)}
        input_ids, labels = [], []
        for i, tid in enumerate(ids):
            if tid == self.image_token_id:  # one image token stands for the image's positions
                input_ids += self.image_ids
                labels += [IGNORE_INDEX] * len(self.image_ids)
            else:
                input_ids.append(tid)
                labels.append(tid if i in supervised else IGNORE_INDEX)
        return input_ids, labels

    def _cut_question(self, sample_id, turns, text, start, asked, offsets, length):
        """Return (ids, offsets, answer characters, question tokens kept) of the conversation, its last question cut.

        The question is cut at a token boundary of the whole text's tokens and the shortened text is tokenised
        again, as it would be served; where the shorter question re-tokenises into more tokens, fewer are kept
        until it fits. Each pass keeps fewer characters, so this ends.
        """
        keep = len(asked)
        while length > self.max_length:
            if keep == 0:
                raise too_long(
                    sample_id,
                    f"the prompt without its question takes {length} tokens, more than the "
                    f"{self.max_length} a sample may have",
                )
            keep = max(0, keep - (length - self.max_length))
            cut = offsets[asked[keep - 1]][1] if keep else start
            cut_text, (cut_start, cut_end), answers = self.render(
                [*turns[:-1], (text[start:cut], turns[-1][1])]
            )
            ids, cut_offsets, length = self._tokens(cut_text)
        return ids, cut_offsets, answers, len(_ending_in(cut_offsets, cut_start, cut_end))

    def __call__(self, records: list[VQARecord | ReportRecord]) -> dict:
        """Return input_ids/attention_mask/labels (batch, seq), pixel_values (batch, 3, H, W) and qids."""
        ids_rows, label_rows, images, qids = [], [], [], []
        for record in records:
            instruction = REPORT_INFERENCE_INSTRUCTION
            if isinstance(record, ReportRecord) and self.train:
                instruction = report_instruction(self.rng)
            qid, question, answer, image = _sample(record, instruction)
            history = record.extra.get("history", ()) if isinstance(record, VQARecord) else ()
            ids, labels = self.encode(qid, question, answer if self.train else None, history)
            ids_rows.append(ids)
            label_rows.append(labels)
            images.append(load_image(image, qid))
            qids.append(qid)
        input_ids = _pad(ids_rows, self.pad_id, self.padding_side)
        batch = {
            "input_ids": input_ids,
            "attention_mask": _pad([[1] * len(r) for r in ids_rows], 0, self.padding_side),
            "pixel_values": self.image_processor(images=images, return_tensors="pt")["pixel_values"],
            "qids": qids,
        }
        if self.train:
            batch["labels"] = _pad(label_rows, IGNORE_INDEX, self.padding_side)
        return batch


class BlipVQACollator:
    """Build BlipForQuestionAnswering batches: question ids, decoder ids/labels for the answer, pixel_values."""

    def __init__(
        self,
        tokenizer,
        image_processor,
        max_question_length: int = 35,
        max_answer_length: int = 16,
        train: bool = True,
        decoder_start_token_id: int | None = None,
        eos_token_id: int | None = None,
    ):
        self.tokenizer, self.image_processor, self.train = tokenizer, image_processor, train
        self.max_question_length, self.max_answer_length = max_question_length, max_answer_length
        # BLIP's decoder starts from config.text_config.bos_token_id ([DEC]) and stops at [SEP].
        start = decoder_start_token_id if decoder_start_token_id is not None else tokenizer.bos_token_id
        start = start if start is not None else getattr(tokenizer, "cls_token_id", None)
        end = eos_token_id if eos_token_id is not None else getattr(tokenizer, "sep_token_id", None)
        end = end if end is not None else tokenizer.eos_token_id
        if start is None or end is None or tokenizer.pad_token_id is None:
            raise ValueError(
                "BlipVQACollator needs decoder start, end and pad token ids; pass decoder_start_token_id= "
                "and eos_token_id= (the model config's text_config.bos_token_id / sep_token_id)."
            )
        self.start_id, self.end_id, self.pad_id = start, end, tokenizer.pad_token_id
        self.truncated = 0
        self.truncated_ids: list[str] = []

    def __call__(self, records: list[VQARecord]) -> dict:
        """Return input_ids/attention_mask (batch, q), decoder_input_ids/decoder_attention_mask/labels (batch, a), pixel_values, qids."""
        questions, answers, images, qids = [], [], [], []
        for record in records:
            if record.extra.get("history"):
                raise ValueError(
                    f"sample {record.qid!r} is a multi-turn conversation, but BLIP-VQA answers one question "
                    "per image with no context; train the miss family on single-turn data, or a multi-turn "
                    "set with the llava or vlm family."
                )
            ids = list(self.tokenizer(record.question, add_special_tokens=True)["input_ids"])
            if len(ids) > self.max_question_length:
                warnings.warn(
                    f"sample {record.qid!r}: question cut from {len(ids)} to {self.max_question_length} tokens.",
                    stacklevel=2,
                )
                self.truncated += 1
                self.truncated_ids.append(record.qid)
                ids = ids[: self.max_question_length - 1] + ids[-1:]
            questions.append(ids)
            answer = [
                self.start_id,
                *self.tokenizer(record.answer, add_special_tokens=False)["input_ids"],
                self.end_id,
            ]
            if self.train and len(answer) > self.max_answer_length:
                raise too_long(
                    record.qid,
                    f"the answer takes {len(answer)} tokens, more than the {self.max_answer_length} the "
                    "decoder is trained on",
                )
            answers.append(answer)
            images.append(load_image(record.image, record.qid))
            qids.append(record.qid)
        batch = {
            "input_ids": _pad(questions, self.pad_id, "right"),
            "attention_mask": _pad([[1] * len(q) for q in questions], 0, "right"),
            "pixel_values": self.image_processor(images=images, return_tensors="pt")["pixel_values"],
            "qids": qids,
        }
        if self.train:
            decoder_ids = _pad(answers, self.pad_id, "right")
            decoder_mask = _pad([[1] * len(a) for a in answers], 0, "right")
            # The model feeds labels as decoder inputs when decoder_input_ids is absent, so both are given:
            # ids keep the pad token, labels mask it; the decoder shifts labels left by one itself.
            batch["decoder_input_ids"] = decoder_ids
            batch["decoder_attention_mask"] = decoder_mask
            batch["labels"] = decoder_ids.masked_fill(decoder_mask == 0, IGNORE_INDEX)
        return batch
