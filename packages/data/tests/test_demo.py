"""The demo sets: each in its published layout, read by its reader; sites differ; closed answers need the image."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from PIL import Image

from medtune.data import read_reports, read_vqa
from medtune.data.demo import demo_dataset


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "demo-cache"))


def majority_share(records) -> float:
    closed = [r.answer.strip().lower() for r in records if r.answer_type.strip().upper() == "CLOSED"]
    return Counter(closed).most_common(1)[0][1] / len(closed)


def test_downstream_is_a_slake_set_whose_closed_questions_need_the_image():
    root = demo_dataset("downstream")
    assert {p.name for p in root.iterdir()} >= {"train.json", "validate.json", "test.json", "imgs"}
    test = read_vqa(root, "test")
    assert majority_share(test) < 0.6  # always answering the commoner word cannot score well
    by_question = {}
    for r in test:
        by_question.setdefault(r.question, set()).add(r.answer)
    assert all(len(answers) > 1 for answers in by_question.values())  # no question has one fixed answer
    assert {r.answer for r in test if r.question == "Where is the lesion?"} == {"left side", "right side"}
    assert Image.open(test[0].image).size == (28, 28)  # this site stores small images


def test_the_out_of_distribution_set_is_in_the_vqa_rad_layout():
    root = demo_dataset("vqa-rad")
    assert (root / "VQA_RAD Dataset Public.json").is_file() and (root / "VQA_RAD Image Folder").is_dir()
    test = read_vqa(root, "test")
    assert test and majority_share(test) < 0.65
    rows = json.loads((root / "VQA_RAD Dataset Public.json").read_text())
    assert {r["answer"] for r in rows if r["answer_type"] == "CLOSED "} == {
        "Yes",
        "No",
    }  # as VQA-RAD writes them


def test_report_sets_are_in_the_iu_xray_and_mimic_layouts():
    iu = demo_dataset("iu-xray")
    assert (iu / "annotation.json").is_file()
    train = read_reports(iu, "train")
    assert len(train) == 120 and all(r.report.startswith("The scan shows the") for r in train)
    mimic = demo_dataset("mimic")
    assert (mimic / "mimic-cxr-2.0.0-split.csv").is_file() and (mimic / "files").is_dir()
    test = read_reports(mimic, "test")
    assert test and all("lesion" in r.report.lower() or "no abnormality" in r.report.lower() for r in test)
