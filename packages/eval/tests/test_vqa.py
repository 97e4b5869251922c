import pytest

from medtune.eval import SCORER_VERSION, normalize_answer, score_vqa, score_vqa_per_item


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Yes.", "yes"),
        ("The Left Lung", "left lung"),
        ("Two", "2"),
        ("isnt", "isn't"),
        ("isn't", "isn't"),
        ("x-ray, chest!", "x ray chest"),
        ("3.5 cm", "3.5 cm"),
        ("1,000", "1000"),
        ("an  apple", "apple"),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_closed_is_word_containment_and_open_is_token_recall():
    predictions = ["Yes, it is.", "normal", "The liver and the heart", "two lungs", "left lung"]
    answers = ["yes", "no", "heart", "2 lungs", "right lung"]
    types = ["closed", "closed", "open", "open", "open"]
    scores = score_vqa(predictions, answers, types)
    # closed: "yes" is in "yes it is" (1); "no" is not a word of "normal" (0) -> 1/2
    assert scores["closed"] == pytest.approx(0.5)
    # open recall: heart 1/1, "2 lungs" 2/2, "right lung" 1/2 -> (1 + 1 + 0.5) / 3
    assert scores["open"] == pytest.approx(2.5 / 3)
    # global is the micro average over the 5 questions: (1 + 0 + 1 + 1 + 0.5) / 5
    assert scores["global"] == pytest.approx(3.5 / 5)
    # strict: only "two lungs" == "2 lungs" after normalisation
    assert scores["closed_exact"] == 0.0
    assert scores["open_exact"] == pytest.approx(1 / 3)
    assert scores["global_exact"] == pytest.approx(1 / 5)
    assert (scores["n_open"], scores["n_closed"]) == (3, 2)
    assert scores["scorer_version"] == SCORER_VERSION
    assert "containment" in SCORER_VERSION and "recall" in SCORER_VERSION


def test_answer_types_are_normalised():
    scores = score_vqa(["yes", "yes"], ["yes", "yes"], ["CLOSED ", " Open"])
    assert (scores["n_open"], scores["n_closed"]) == (1, 1)
    assert scores["closed"] == 1.0 and scores["open"] == 1.0


def test_empty_predictions_are_wrong_and_counted():
    scores = score_vqa(["", "   ", "yes"], ["yes", "lung", "yes"], ["closed", "open", "closed"])
    assert scores["n_closed"] == 2 and scores["n_open"] == 1
    assert scores["closed"] == pytest.approx(0.5)
    assert scores["open"] == 0.0
    assert scores["global"] == pytest.approx(1 / 3)
    assert scores["n_empty_predictions"] == 2


def test_type_without_questions_is_none():
    scores = score_vqa(["yes"], ["yes"], ["closed"])
    assert scores["open"] is None and scores["n_open"] == 0


def test_per_item_scores():
    items = score_vqa_per_item(["lung", "no"], ["left lung", "no"], ["open", "closed"])
    assert [item.score for item in items] == [0.5, 1.0]
    assert [item.exact for item in items] == [0.0, 1.0]


def test_different_lengths_is_a_clear_error():
    with pytest.raises(ValueError, match=r"2 predictions, 1 answers and 2 answer types.*same length"):
        score_vqa(["a", "b"], ["a"], ["open", "open"])


def test_unknown_answer_type_names_the_index():
    with pytest.raises(ValueError, match=r"Unknown answer type 'yes/no' at index 1"):
        score_vqa(["a", "b"], ["a", "b"], ["open", "yes/no"])


def test_no_questions_is_a_clear_error():
    with pytest.raises(ValueError, match="no predictions to score"):
        score_vqa([], [], [])
