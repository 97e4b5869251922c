import random

import pytest

from medtune.data import (
    REPORT_INFERENCE_INSTRUCTION,
    REPORT_TRAINING_INSTRUCTIONS,
    get_template,
    report_instruction,
)


def test_vicuna_v1_render():
    prompt, answer = get_template("vicuna_v1").render("Is the heart enlarged?", "no")
    assert prompt == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\nIs the heart enlarged? ASSISTANT:"
    )
    assert answer == " no</s>"


def test_mistral_instruct_render():
    assert get_template("mistral_instruct").render("Which organ?", "lung") == (
        "[INST] <image>\nWhich organ? [/INST]",
        " lung</s>",
    )


def test_demo_render_and_eos_override():
    template = get_template("demo")
    assert template.render("Which organ?", "lung") == ("<image>\nQ: Which organ?\nA:", " lung</s>")
    assert template.render("Which organ?", "lung", eos="<|end|>")[1] == " lung<|end|>"
    assert template.render("Which organ?") == ("<image>\nQ: Which organ?\nA:", "")


def test_placeholder_appears_once_even_if_the_question_has_one():
    prompt, _ = get_template("demo").render("<image> Which organ?", "lung")
    assert prompt.count("<image>") == 1


def test_blip_vqa_has_no_placeholder():
    assert get_template("blip_vqa").render("Which organ?", "lung") == ("Which organ?", "lung[SEP]")


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown prompt template 'chatml'"):
        get_template("chatml")


def test_report_instructions():
    assert REPORT_INFERENCE_INSTRUCTION == "Describe the given chest x-ray image in detail."
    draws = [report_instruction(random.Random(7)) for _ in range(3)]
    assert len(set(draws)) == 1 and draws[0] in REPORT_TRAINING_INSTRUCTIONS
    rng = random.Random(0)
    assert len({report_instruction(rng) for _ in range(200)}) == len(REPORT_TRAINING_INSTRUCTIONS)
