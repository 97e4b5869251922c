"""Prompt templates: where the image placeholder, the question and the answer go for each preset's chat format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IMAGE_PLACEHOLDER = "<image>"
TemplateName = Literal["vicuna_v1", "mistral_instruct", "demo", "blip_vqa"]

# LLaVA's conv_vicuna_v1 (Vicuna v1.1) system prompt, used by LLaVA-Med v1.
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


@dataclass(frozen=True)
class PromptTemplate:
    """A chat format: prompt_format holds the first {question} (and <image> once); answer_format holds {answer}.

    turn_format is a later user turn of a multi-turn conversation (no system prompt, no image), as the
    model's own conversation template continues it; None where the format has no later turns.
    """

    name: str
    prompt_format: str
    answer_format: str = " {answer}"
    eos: str = "</s>"
    add_bos: bool = False
    image_placeholder: str | None = IMAGE_PLACEHOLDER
    turn_format: str | None = None

    def __post_init__(self):
        if self.prompt_format.count("{question}") != 1:
            raise ValueError(
                f"template {self.name!r}: prompt_format must contain '{{question}}' exactly once."
            )
        if self.image_placeholder is not None and self.prompt_format.count(self.image_placeholder) != 1:
            raise ValueError(
                f"template {self.name!r}: prompt_format must contain {self.image_placeholder!r} once."
            )
        if self.answer_format.count("{answer}") != 1:
            raise ValueError(f"template {self.name!r}: answer_format must contain '{{answer}}' exactly once.")
        if self.turn_format is not None and self.turn_format.count("{question}") != 1:
            raise ValueError(f"template {self.name!r}: turn_format must contain '{{question}}' exactly once.")

    def prompt_parts(self, question: str) -> tuple[str, str, str]:
        """Return (text before the question, the question, text after it) of the prompt."""
        head, tail = self.prompt_format.split("{question}")
        if self.image_placeholder is not None:
            # A stray placeholder in the question would add a second image slot.
            question = " ".join(question.replace(self.image_placeholder, " ").split())
        return head, question, tail

    def turn_parts(self, question: str) -> tuple[str, str, str]:
        """Return (text before, the question, text after) of a later user turn of a conversation."""
        if self.turn_format is None:
            raise ValueError(
                f"template {self.name!r} has no format for a later conversation turn; "
                "train multi-turn conversations with a chat template that has one (vicuna_v1, mistral_instruct)."
            )
        head, tail = self.turn_format.split("{question}")
        if self.image_placeholder is not None:
            question = " ".join(question.replace(self.image_placeholder, " ").split())
        return head, question, tail

    def answer_body(self, answer: str) -> str:
        """Return the answer text as the template places it, without the end-of-turn marker."""
        return self.answer_format.format(answer=answer)

    def render(self, question: str, answer: str | None = None, eos: str | None = None) -> tuple[str, str]:
        """Return (prompt up to where the answer starts, answer text + eos); answer '' when answer is None."""
        prompt = "".join(self.prompt_parts(question))
        if answer is None:
            return prompt, ""
        return prompt, self.answer_body(answer) + (self.eos if eos is None else eos)


TEMPLATES: dict[str, PromptTemplate] = {
    # Later turns follow LLaVA's conv_vicuna_v1 (sep " ", sep2 "</s>") and conv_mistral_instruct (LLAMA_2 style).
    "vicuna_v1": PromptTemplate(
        "vicuna_v1",
        VICUNA_V1_SYSTEM + " USER: <image>\n{question} ASSISTANT:",
        add_bos=True,
        turn_format="USER: {question} ASSISTANT:",
    ),
    "mistral_instruct": PromptTemplate(
        "mistral_instruct",
        "[INST] <image>\n{question} [/INST]",
        add_bos=True,
        turn_format="[INST] {question} [/INST]",
    ),
    "demo": PromptTemplate("demo", "<image>\nQ: {question}\nA:", turn_format="\nQ: {question}\nA:"),
    # BLIP-VQA encodes the question alone; the image enters through cross-attention, not a placeholder.
    "blip_vqa": PromptTemplate("blip_vqa", "{question}", "{answer}", eos="[SEP]", image_placeholder=None),
}


def get_template(name: TemplateName) -> PromptTemplate:
    """Return the named prompt template."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; choose one of {sorted(TEMPLATES)}.")
    return TEMPLATES[name]
