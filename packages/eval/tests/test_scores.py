import json

import pytest

from medtune.eval import read_predictions, write_eval_outputs


def test_scores_json_names_the_variant_of_every_number(tmp_path):
    scores = write_eval_outputs(
        tmp_path,
        qids=["q1", "q2", "q3"],
        questions=["Is it normal?", "Which organ?", "Is there a mass?"],
        answers=["no", "left lung", "yes"],
        answer_types=["CLOSED", "OPEN", "CLOSED "],
        predictions=["It looks normal", "lung lung", 3],
        dataset="slake",
        split="test",
        bertscore_model="medtune-tests/no-such-encoder",
    )
    written = json.loads((tmp_path / "scores.json").read_text())
    assert written == scores
    assert written["scorer_variant"] == "medtune"
    assert written["variants"]["medtune"]["closed"] == written["closed"] == 0.0
    assert written["variants"]["llava-med"]["closed"] == 1.0  # "no" in "it looks normal"; 'CLOSED ' dropped
    assert written["variants"]["llava-med"]["n_dropped"] == 1
    assert written["variants"]["llava-med"]["open"] == pytest.approx(2 / 3)  # unclipped: 2 / (2 + 1)
    assert written["variants"]["medtune"]["open"] == pytest.approx(1 / 2)
    rows = read_predictions(tmp_path / "predictions.jsonl")
    assert [row["score"] for row in rows] == [0.0, 0.5, 0.0]
    assert [row["llava_med_score"] for row in rows] == [1.0, pytest.approx(2 / 3), None]
    assert rows[2]["prediction"] == "3"


def test_the_summary_leads_with_the_chosen_variant():
    from medtune.eval import score_vqa, vqa_summary

    scores = score_vqa(["It appears normal", "lung, lung"], ["no", "left lung"], ["CLOSED", "OPEN"])
    assert vqa_summary(scores) == (
        "medtune: open 50.0% | closed 0.0% | global 25.0% "
        "(llava-med: open 66.7% | closed 100.0% | global 83.3%)"
    )
    assert vqa_summary(scores, "llava-med").startswith("llava-med: open 66.7% | closed 100.0%")
    # a type without questions, and scores written before the variants existed
    assert "closed n/a" in vqa_summary(score_vqa(["liver"], ["liver"], ["OPEN"]))
    assert (
        vqa_summary({"open": 0.5, "closed": None, "global": 0.5}) == "open 50.0% | closed n/a | global 50.0%"
    )
    with pytest.raises(ValueError, match="Unknown scorer 'vqa'"):
        vqa_summary(scores, "vqa")
