"""Hand-worked checks of each rule of the `llava-med` variant (LLaVA-Med b9a98a7's batch scorer)."""

import pytest

from medtune.eval import score_vqa
from medtune.eval.llava_med import llava_med_hit, llava_med_normalize, llava_med_recall


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Yes.", "yes"),
        ("The Left Lung", "left lung"),
        ("x-ray", "x ray"),  # a mark that touches no space becomes a space
        ("x - ray", "x ray"),  # one that touches a space vanishes
        ("x-ray, chest", "x ray chest"),  # decided per mark: "-" spaced, ", " vanishes
        ("1,000 x-ray", "1000 xray"),  # any digit,digit makes every mark vanish
        ("yes: liver", "yes: liver"),  # ":" is not one of its 21 marks
        ("lung###", "lung###"),  # nor is "#"
        ("yes</s>", "yes s"),  # "<", "/", ">" are: the end marker leaves a stray "s"
        ("liver.spleen", "liverspleen"),  # a period not before a digit is deleted, not spaced
        ("3.5 cm.", "3.5 cm"),
        ("." * 40, "." * 8),  # only the first 32 periods are deleted
        ("ten", "10"),
        ("eleven", "eleven"),  # its number words stop at ten
        ("none", "0"),
        ("isnt", "isn't"),
        ("hows", "how's"),  # its full contraction table
        ("a an the", ""),
        ("是的，", "是的，"),  # Chinese punctuation is no mark of its
    ],
)
def test_normalisation(raw, normalised):
    assert llava_med_normalize(raw) == normalised


@pytest.mark.parametrize("prediction", ["normal", "There is a nodule", "not sure", "No"])
def test_closed_is_a_raw_substring_so_no_is_found_in_other_words(prediction):
    assert llava_med_hit(prediction, "no") == 1.0


def test_closed_misses_and_edge_cases():
    assert llava_med_hit("yes", "no") == 0.0
    assert llava_med_hit("", "yes") == 0.0  # an empty prediction contains no answer
    assert llava_med_hit("anything", "") == 1.0  # but an empty answer is in every prediction
    assert llava_med_hit("yes</s>", "yes") == 1.0
    assert llava_med_hit("是的", "是") == 1.0
    assert llava_med_hit("不是", "是") == 1.0  # the Chinese form of the "no" in "not" trap


def test_open_recall_counts_the_predictions_repeats():
    # tp counts the prediction's 3 "lung"s, fn the missing "left": 3 / (3 + 1)
    assert llava_med_recall("lung lung lung", "left lung") == pytest.approx(0.75)
    assert llava_med_recall("left lung", "left lung") == 1.0
    assert llava_med_recall("right lung", "left lung") == pytest.approx(0.5)
    assert llava_med_recall("heart", "left lung") == 0.0


def test_open_recall_on_whitespace_words_only():
    assert llava_med_recall("lung###", "lung") == 0.0  # "lung###" is one word
    assert llava_med_recall("CT图像", "CT") == 0.0  # so is "ct图像"
    assert llava_med_recall("two", "2") == 1.0
    assert llava_med_recall("twelve", "12") == 0.0
    assert llava_med_recall("", "lung") == 0.0
    assert llava_med_recall("lung", "") == 0.0


def test_labels_other_than_exactly_open_or_closed_are_dropped(capsys):
    scores = score_vqa(
        ["yes", "no", "liver", "yes"], ["yes", "yes", "liver", "yes"], ["CLOSED", "CLOSED ", "OPEN", "closed"]
    )
    llava = scores["variants"]["llava-med"]
    assert (llava["n_closed"], llava["n_open"], llava["n_dropped"]) == (1, 1, 2)
    # the wrong "no" was labelled 'CLOSED ', so it is not counted
    assert llava["closed"] == 1.0
    assert scores["closed"] == pytest.approx(2 / 3)  # medtune counts all three closed questions
    assert "2 question(s) left out" in capsys.readouterr().err


def test_scores_of_the_variant_family():
    predictions = ["It is normal.", "Yes", "lung lung lung", "The liver"]
    answers = ["no", "yes", "left lung", "liver"]
    types = ["CLOSED", "CLOSED", "OPEN", "OPEN"]
    scores = score_vqa(predictions, answers, types)
    llava, medtune = scores["variants"]["llava-med"], scores["variants"]["medtune"]
    assert llava["closed"] == 1.0  # "no" in "it is normal"
    assert llava["open"] == pytest.approx((0.75 + 1.0) / 2)
    assert llava["open_hit"] == pytest.approx(0.5)  # "left lung" is not in "lung lung lung"
    assert llava["global"] == pytest.approx((1 + 1 + 0.75 + 1) / 4)
    assert llava["scorer_version"].startswith("llava-med-b9a98a7")
    # the medtune variant of the same answers: "no" is no word of "it is normal"; recall clipped
    assert medtune["closed"] == pytest.approx(0.5)
    assert medtune["open"] == pytest.approx((0.5 + 1.0) / 2)
    assert medtune["scorer_version"] == scores["scorer_version"]


def test_a_type_without_questions_is_none():
    llava = score_vqa(["yes"], ["yes"], ["CLOSED"])["variants"]["llava-med"]
    assert llava["open"] is None and llava["open_hit"] is None
