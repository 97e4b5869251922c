"""LLaVA instruction data as LLaVA trains it: --image-folder, whole multi-turn conversations, question JSONL."""

import json

import pytest

from medtune.data import DataError, read_llava_json, read_llava_questions, read_vqa


def _conversation(rid: str, image: str, *pairs: tuple[str, str]) -> dict:
    turns = []
    for k, (question, answer) in enumerate(pairs):
        turns.append({"from": "human", "value": f"<image>\n{question}" if k == 0 else question})
        turns.append({"from": "gpt", "value": answer})
    return {"id": rid, "image": image, "conversations": turns}


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_images_resolve_against_the_image_folder(tmp_path, builders):
    images = tmp_path / "pmc-images"
    builders.make_image(images / "PMC1_fig2.jpg", fmt="JPEG")
    rows = [_conversation("c1", "PMC1_fig2.jpg", ("What does the figure show?", "A CT of the chest."))]
    path = _write(tmp_path / "instruct" / "llava_med_instruct.json", rows)
    (record,) = read_llava_json(path, image_folder=images)
    assert record.image == images / "PMC1_fig2.jpg"
    # the CLI path: read_vqa with image_folder reads the same
    assert read_vqa(path, "train", image_folder=images)[0].image == images / "PMC1_fig2.jpg"


def test_a_multi_turn_conversation_is_one_record_with_its_context(tmp_path, builders):
    builders.make_image(tmp_path / "images" / "x.png", fmt="PNG")
    pairs = [("What modality is this?", "CT"), ("Which organ?", "Liver"), ("Is it enlarged?", "Yes")]
    path = _write(tmp_path / "train.json", [_conversation("c", "images/x.png", *pairs)])
    (record,) = read_vqa(path, "train")
    assert (record.qid, record.question, record.answer) == ("c", "Is it enlarged?", "yes")
    assert record.extra["history"] == [["What modality is this?", "CT"], ["Which organ?", "Liver"]]


def test_llava_med_question_jsonl(tmp_path, builders):
    builders.make_image(tmp_path / "images" / "a.jpg", fmt="JPEG")
    lines = [
        {"question_id": 11, "image": "a.jpg", "text": "Is there a mass?\n<image>", "answer": "No"},
        {"question_id": 12, "image": "a.jpg", "text": "Describe the image.", "gpt4_answer": "A chest x-ray."},
    ]
    path = tmp_path / "llava_med_eval_qa50_qa.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    records = read_vqa(path, "test", image_folder=tmp_path / "images")
    assert [(r.qid, r.question, r.answer, r.answer_type) for r in records] == [
        ("11", "Is there a mass?", "no", "CLOSED"),
        ("12", "Describe the image.", "A chest x-ray.", "OPEN"),
    ]
    assert records[1].extra["gpt4_answer"] == "A chest x-ray." and records[1].source == "llava-med"
    assert read_llava_questions(path, image_folder=tmp_path / "images") == records


def test_a_train_file_is_not_its_own_test_split(tmp_path, builders):
    builders.make_image(tmp_path / "images" / "x.png", fmt="PNG")
    path = _write(tmp_path / "train.json", [_conversation("c", "images/x.png", ("Which organ?", "Liver"))])
    with pytest.raises(
        DataError,
        match=r"train.json: has no 'test' split \(the file is the train split alone\); "
        r"give the evaluation data separately \(medtune train --eval-dataset PATH\)",
    ):
        read_vqa(path, "test")


def test_a_folder_without_a_test_file_says_what_to_pass(tmp_path, builders):
    builders.make_image(tmp_path / "images" / "x.png", fmt="PNG")
    _write(tmp_path / "train.json", [_conversation("c", "images/x.png", ("Which organ?", "Liver"))])
    with pytest.raises(
        DataError, match=r"has no 'test' split \(no test.json in the folder\).*--eval-dataset"
    ):
        read_vqa(tmp_path, "test")


# Bad input: one sentence naming the file, the record and the field.


def test_a_conversation_whose_last_turn_is_the_users(tmp_path, builders):
    builders.make_image(tmp_path / "images" / "x.png", fmt="PNG")
    row = _conversation("c7", "images/x.png", ("Which organ?", "Liver"))
    row["conversations"].append({"from": "human", "value": "And the lesion?"})
    path = _write(tmp_path / "train.json", [row])
    with pytest.raises(DataError) as err:
        read_vqa(path, "train")
    assert str(err.value) == (
        f"{path}, record 0, id 'c7', field 'conversations[2]': the conversation ends with a human turn that "
        "has no gpt answer; every human turn needs the gpt reply it is trained on, so answer it or remove it."
    )


def test_an_image_path_outside_the_image_folder(tmp_path, builders):
    builders.make_image(tmp_path / "elsewhere" / "x.png", fmt="PNG")
    (tmp_path / "images").mkdir()
    rows = [_conversation("c", "../elsewhere/x.png", ("Which organ?", "Liver"))]
    path = _write(tmp_path / "data" / "train.json", rows)
    with pytest.raises(DataError) as err:
        read_vqa(path, "train", image_folder=tmp_path / "images")
    images = tmp_path / "images"
    assert str(err.value) == (
        f"{path}, record 0, id 'c', field 'image': the image path {images / '../elsewhere/x.png'} lies outside "
        f"the image folder {images}; image names must be paths relative to that folder (no '..', not absolute)."
    )
    # without --image-folder, paths are relative to the JSON file and may point anywhere
    assert read_vqa(path, "train")[0].image == tmp_path / "data" / "../elsewhere/x.png"


def test_a_question_line_without_an_answer(tmp_path, builders):
    builders.make_image(tmp_path / "a.jpg", fmt="JPEG")
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps({"question_id": "q1", "image": "a.jpg", "text": "Mass?"}) + "\n")
    with pytest.raises(
        DataError,
        match=r"questions.jsonl, record 0, id 'q1', field 'answer': the line has no "
        r"reference answer \(none of answer, gpt4_answer, gt_answer\)",
    ):
        read_vqa(path, "test")


def test_a_turn_whose_value_is_not_text(tmp_path, builders):
    builders.make_image(tmp_path / "images" / "x.png", fmt="PNG")
    row = _conversation("c", "images/x.png", ("Which organ?", "Liver"), ("And?", "x"))
    row["conversations"][1]["value"] = ["Liver"]
    path = _write(tmp_path / "train.json", [row])
    with pytest.raises(
        DataError,
        match=r"record 0, id 'c', field 'conversations\[1\].value': the turn's value is a JSON list",
    ):
        read_vqa(path, "train")


def test_a_question_file_reports_its_first_bad_line_first(tmp_path, builders):
    builders.make_image(tmp_path / "a.jpg", fmt="JPEG")
    good = {"question_id": 1, "image": "a.jpg", "text": "Is there a mass?", "answer": "no"}
    lines = [json.dumps(good), json.dumps({"question_id": 2, "image": "a.jpg", "answer": "no"}), "{not json"]
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="'text'") as err:  # line 2's missing field, not line 3's syntax
        read_vqa(path, "test")
    assert err.value.rejection.index == 1
    rejected: list = []
    assert [r.qid for r in read_vqa(path, "test", on_invalid="report", rejected=rejected)] == ["1"]
    assert [r.index for r in rejected] == [1, 2] and "line 3 is not valid JSON" in rejected[1].reason
