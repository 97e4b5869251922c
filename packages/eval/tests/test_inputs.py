"""Every public scoring function checks its inputs and names the index of a bad entry."""

import numpy as np
import pytest

from medtune.eval import score_predictions, score_text, score_vqa, score_vqa_per_item
from medtune.eval.bertscore import bertscore
from medtune.eval.text import count_tokens, mean_tokens, meteor, rouge_l

NO_ENCODER = "medtune-tests/no-such-encoder"


@pytest.mark.parametrize(
    "call",
    [
        lambda: score_vqa("yes", ["yes"], ["closed"]),
        lambda: score_vqa(["yes"], "yes", ["closed"]),
        lambda: score_vqa_per_item(["yes"], ["yes"], "closed"),
        lambda: score_predictions("yes", ["yes"], ["closed"], bertscore_model=NO_ENCODER),
        lambda: score_text("the lung", ["the lung"], bertscore_model=NO_ENCODER),
        lambda: meteor(["lung"], "lung"),
        lambda: rouge_l("lung", ["lung"]),
        lambda: bertscore("lung", ["lung"], model=NO_ENCODER),
        lambda: mean_tokens("lung"),
    ],
)
def test_a_string_where_a_list_belongs_is_a_type_error(call):
    with pytest.raises(TypeError, match="not a single string"):
        call()


def test_a_mapping_or_a_number_is_not_a_list():
    with pytest.raises(TypeError, match="got dict"):
        score_vqa({"q1": "yes"}, ["yes"], ["closed"])
    with pytest.raises(TypeError, match="got int"):
        score_vqa(3, ["yes"], ["closed"])


@pytest.mark.parametrize("missing", [None, float("nan"), np.float64("nan")])
def test_a_missing_prediction_is_an_empty_one(missing):
    scores = score_vqa([missing, "yes"], ["yes", "yes"], ["CLOSED", "CLOSED"])
    assert scores["closed"] == 0.5 and scores["variants"]["llava-med"]["closed"] == 0.5
    assert scores["n_empty_predictions"] == 1
    text = score_text([missing, "lung"], ["lung", "lung"], bertscore_model=NO_ENCODER)
    assert text["n_empty_predictions_text"] == 1


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_a_missing_answer_names_the_index(missing):
    with pytest.raises(ValueError, match=r"answers at index 1 is (None|nan)"):
        score_vqa(["yes", "no"], ["yes", missing], ["closed", "closed"])
    with pytest.raises(ValueError, match="references at index 0"):
        score_text(["lung"], [missing], bertscore_model=NO_ENCODER)
    with pytest.raises(ValueError, match="answer_types at index 0"):
        score_vqa(["yes"], ["yes"], [missing])


def test_numbers_become_text_as_the_readers_write_them():
    predictions = [2, 3.0, np.int64(4), True, 2.5]
    answers = ["2", 3, "four", "yes", "2.5"]
    scores = score_vqa(predictions, answers, ["OPEN", "OPEN", "OPEN", "CLOSED", "OPEN"])
    assert scores["global"] == 1.0 and scores["variants"]["llava-med"]["global"] == 1.0


def test_an_entry_of_another_type_names_the_index():
    with pytest.raises(TypeError, match=r"predictions at index 1 is a list"):
        score_vqa(["yes", ["yes"]], ["yes", "yes"], ["closed", "closed"])
    with pytest.raises(TypeError, match=r"references at index 0 is a dict"):
        score_text(["lung"], [{"text": "lung"}], bertscore_model=NO_ENCODER)
    with pytest.raises(TypeError, match="one text"):
        count_tokens(["lung"])


def test_tuples_and_generators_are_lists_too():
    scores = score_vqa(("yes", "no"), (a for a in ["yes", "no"]), ["closed", "closed"])
    assert scores["closed"] == 1.0


def test_lengths_are_checked_everywhere():
    with pytest.raises(ValueError, match="2 predictions and 1 references"):
        meteor(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="2 predictions, 1 answers and 2 answer types"):
        score_predictions(["a", "b"], ["a"], ["open", "open"], bertscore_model=NO_ENCODER)
    with pytest.raises(ValueError, match="no predictions to score"):
        rouge_l([], [])


def test_the_normalisers_take_one_text():
    from medtune.eval import normalize_answer
    from medtune.eval.llava_med import llava_med_normalize

    with pytest.raises(TypeError, match="not a NoneType"):
        normalize_answer(None)
    with pytest.raises(TypeError, match="not a list"):
        llava_med_normalize(["yes"])
