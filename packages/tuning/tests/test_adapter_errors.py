"""Bad adapters, images and question files: one sentence naming the file (and line), exit status 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from medtune.core_models import load
from medtune.data import demo_dataset, read_vqa
from medtune.tuning.adapter import PEFT_WEIGHTS
from medtune.tuning.cli import main

FAST = ["--no-eval-before", "--no-eval", "--quiet", "--batch-size", "2", "--max-steps", "2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_cache) -> Path:
    out = tmp_path_factory.mktemp("error-runs")
    assert main(["train", "llava", "ln", *FAST, "--output-dir", str(out)]) == 0
    (found,) = out.iterdir()
    return found


@pytest.fixture(scope="module")
def image(demo_cache) -> str:
    return str(read_vqa(demo_dataset("downstream"), "test")[0].image)


def copy_adapter(run: Path, tmp_path: Path) -> Path:
    adapter = tmp_path / "adapter"
    shutil.copytree(run / "adapter", adapter)
    return adapter


def fails(argv: list[str], capsys) -> str:
    """Run ``medtune ARGV``, assert exit status 2 and one line on stderr, and return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err  # progress bars of the loading before the failure may come first
    assert "Traceback" not in err and err.count(f"medtune {argv[0]}: error: ") == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"medtune {argv[0]}: error: "), err
    return line


def test_an_adapter_for_another_base_is_refused(run, image, tmp_path, capsys):
    other = load("tiny-llava")
    with torch.no_grad():
        other.model.model.language_model.layers[0].mlp.up_proj.weight.add_(0.01)
    folder = tmp_path / "other-base"
    for part in (other.model, other.tokenizer, other.image_processor):
        part.save_pretrained(folder)
    err = fails(
        ["predict", str(run), "--model-path", str(folder), "--image", image, "--question", "what?"], capsys
    )
    assert "was made for another base model" in err and str(run / "adapter") in err


def test_a_manifest_of_another_preset_is_refused(run, image, tmp_path, capsys):
    adapter = copy_adapter(run, tmp_path)
    manifest = json.loads((adapter / "manifest.json").read_text())
    (adapter / "manifest.json").write_text(json.dumps({**manifest, "preset": "tiny-miss"}))
    err = fails(["predict", str(adapter), "--image", image, "--question", "what?"], capsys)
    assert "manifest.json names preset 'tiny-miss', a miss preset, not llava" in err

    miss_base = str(load("tiny-miss").source)  # the right manifest, but a base of another family
    err = fails(
        ["predict", str(run), "--model-path", miss_base, "--image", image, "--question", "what?"], capsys
    )
    assert "cannot load the base of" in err and "not a llava model" in err


def test_a_corrupt_adapter_file_is_refused(run, tmp_path, capsys):
    adapter = copy_adapter(run, tmp_path)
    data = (adapter / PEFT_WEIGHTS).read_bytes()
    (adapter / PEFT_WEIGHTS).write_bytes(data[: len(data) // 2])  # cut short, as by a failed copy
    err = fails(["eval", str(adapter), "--dataset", str(demo_dataset("downstream")), "--quiet"], capsys)
    assert f"{adapter / PEFT_WEIGHTS} is not a readable safetensors file" in err


def test_an_undecodable_image_is_refused(run, tmp_path, capsys):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    err = fails(["predict", str(run), "--image", str(bad), "--question", "what?"], capsys)
    assert f"Image file {bad}" in err and "cannot be decoded" in err


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("{not json", "is not valid JSON"),
        ('["a list"]', "is not a JSON object"),
        ('{"image": "scan.png"}', "has no question"),
    ],
)
def test_a_question_file_with_a_bad_line_is_refused(run, image, tmp_path, capsys, line, words):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"image": image, "question": "what organ?"}) + "\n" + line + "\n")
    err = fails(["predict", str(run), "--input", str(questions)], capsys)
    assert f"{questions} line 2 {words}" in err
