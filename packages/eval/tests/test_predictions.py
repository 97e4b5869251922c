import json

import pytest

from medtune.eval import prediction_rows, read_predictions, write_eval_outputs, write_predictions


def test_round_trip_keeps_every_row(tmp_path):
    rows = prediction_rows(
        [7, 8], ["q1", "q2"], ["yes", "lung"], ["yes", ""], ["CLOSED", "OPEN"], [1, 0], [1.0, 0.0]
    )
    path = write_predictions(tmp_path / "run" / "predictions.jsonl", rows)
    assert read_predictions(path) == rows
    assert rows[1] == {
        "qid": 8,
        "question": "q2",
        "answer": "lung",
        "prediction": "",
        "answer_type": "OPEN",
        "n_tokens": 0,
        "score": 0.0,
    }


def test_bad_rows_name_file_line_and_field(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps({"qid": 1, "question": "q", "answer": "a", "prediction": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"predictions.jsonl line 1 has no 'answer_type', 'n_tokens' field"):
        read_predictions(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        read_predictions(path)
    with pytest.raises(FileNotFoundError, match="No predictions file at"):
        read_predictions(tmp_path / "missing.jsonl")


def test_write_eval_outputs_scores_and_writes_both_files(tmp_path):
    scores = write_eval_outputs(
        tmp_path,
        qids=["a", "b"],
        questions=["is it normal?", "which organ?"],
        answers=["yes", "left lung"],
        answer_types=["closed", "open"],
        predictions=["yes it is", "lung"],
        dataset="vqa-rad",
        split="test",
        bertscore_model="medtune-tests/no-such-encoder",
    )
    assert scores["global"] == pytest.approx((1 + 0.5) / 2)
    on_disk = json.loads((tmp_path / "scores.json").read_text())
    assert on_disk == scores and on_disk["dataset"] == "vqa-rad" and on_disk["split"] == "test"
    rows = read_predictions(tmp_path / "predictions.jsonl")
    assert [row["score"] for row in rows] == [1.0, 0.5]
    assert [row["n_tokens"] for row in rows] == [3, 1]


def test_report_answers_get_text_scores_only(tmp_path):
    scores = write_eval_outputs(
        tmp_path,
        qids=[1],
        questions=["describe the image"],
        answers=["no acute findings"],
        answer_types=["report"],
        predictions=["no acute findings"],
        dataset="mimic-cxr",
        split="test",
        bertscore_model="medtune-tests/no-such-encoder",
    )
    assert "global" not in scores and scores["rougeL_f1"] == pytest.approx(1.0)
