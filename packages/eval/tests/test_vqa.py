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
        ("hows", "how's"),  # the VQA contraction table, as LLaVA-Med's
        ("x-ray, chest!", "x ray chest"),
        ("3.5 cm", "3.5 cm"),
        ("1,000", "1000"),
        ("an  apple", "apple"),
        ("twelve", "12"),  # number words up to twenty
        ("liver.spleen", "liver spleen"),  # a period between words is a word break
        ("yes: liver", "yes liver"),  # every mark outside words is punctuation
        ("yes###Human: is it?", "yes"),  # the answer ends at an end marker
        ("yes</s>", "yes"),
        ("### yes", "yes"),  # a leading marker leaves the answer after it
        ("CT图像", "ct 图 像"),  # unspaced scripts: one token per character
        ("是的，", "是 的"),  # CJK punctuation is punctuation
        ("ＣＴ", "ct"),  # full-width forms fold (NFKC)
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
    # the top-level keys are the medtune variant, under its own name as well
    assert scores["scorer_variant"] == "medtune"
    for key in ("open", "closed", "global", "open_exact", "n_open"):
        assert scores["variants"]["medtune"][key] == scores[key]


@pytest.mark.parametrize("prediction", ["normal", "There is a nodule", "not sure", "No lesion is seen"])
def test_closed_matches_whole_words_only(prediction):
    expected = 1.0 if prediction.startswith("No ") else 0.0
    assert score_vqa([prediction], ["no"], ["closed"])["closed"] == expected


def test_closed_multiword_answers_must_appear_in_order():
    assert score_vqa(["the left lung is clear"], ["left lung"], ["closed"])["closed"] == 1.0
    assert score_vqa(["lung on the left"], ["left lung"], ["closed"])["closed"] == 0.0


def test_open_recall_clips_repeated_words():
    # "lung" said three times is recalled once: 1 of the 2 answer words
    assert score_vqa(["lung lung lung"], ["left lung"], ["open"])["open"] == pytest.approx(0.5)
    assert score_vqa(["left left lung"], ["left left lung"], ["open"])["open"] == 1.0


def test_numbers_as_digits_and_words():
    assert score_vqa(["two", "12 lesions"], ["2", "twelve"], ["open", "closed"])["global"] == 1.0


def test_end_markers_do_not_cost_the_answer():
    scores = score_vqa(["yes</s>", "lung###Human: what"], ["yes", "lung"], ["closed", "open"])
    assert scores["closed"] == 1.0 and scores["open"] == 1.0
    assert scores["global_exact"] == 1.0


@pytest.mark.parametrize(
    ("prediction", "answer", "answer_type", "expected"),
    [
        # Slake's Chinese answers: closed 是/否, open organ, modality and plane names
        ("是的", "是", "closed", 1.0),
        ("是", "是", "closed", 1.0),
        ("否", "是", "closed", 0.0),
        ("不是", "是", "closed", 0.0),  # a negated match is no match
        ("没有", "有", "closed", 0.0),
        ("有，在左肺", "有", "closed", 1.0),
        ("CT图像", "CT", "open", 1.0),
        ("这是一张MRI图像", "MRI", "open", 1.0),
        ("肝", "肝脏", "open", 0.5),  # one of the answer's two characters
        ("左肺和右肺", "右肺", "open", 1.0),
        ("横断面", "冠状面", "open", 1 / 3),  # only 面 is shared
    ],
)
def test_chinese_is_matched_by_character(prediction, answer, answer_type, expected):
    scores = score_vqa([prediction], [answer], [answer_type])
    assert scores[answer_type] == pytest.approx(expected)


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
