from types import SimpleNamespace

import pytest

from medtune.eval import score_text
from medtune.eval import text as text_module


def _text(predictions, references, **kwargs):
    # A name that is certainly not in any local cache: BERTScore is skipped, the rest is computed.
    return score_text(predictions, references, bertscore_model="medtune-tests/no-such-encoder", **kwargs)


def test_rouge_l_by_hand():
    scores = _text(["mass in the lung", "left lung"], ["small mass in left lung", "left lung"])
    # pair 1: LCS(mass in the lung, small mass in left lung) = "mass in lung" = 3 tokens
    r1, p1 = 3 / 5, 3 / 4
    f1 = 2 * r1 * p1 / (r1 + p1)
    assert scores["rougeL_recall"] == pytest.approx((r1 + 1) / 2)
    assert scores["rougeL_precision"] == pytest.approx((p1 + 1) / 2)
    assert scores["rougeL_f1"] == pytest.approx((f1 + 1) / 2)


def test_meteor_exact_match_has_only_the_one_chunk_penalty():
    scores = _text(["the lung is normal"], ["the lung is normal"])
    # P = R = 1, one chunk of 4 matches: penalty 0.5 * (1/4)^3
    assert scores["meteor"] == pytest.approx(1 - 0.5 * (1 / 4) ** 3)


def test_meteor_fragment_penalty_by_hand():
    swapped = _text(["ray shows chest x"], ["chest x ray shows"])["meteor"]
    # all 4 words match in 2 chunks: penalty 0.5 * (2/4)^3
    assert swapped == pytest.approx(1 - 0.5 * 0.5**3)
    partial = _text(["mass in lung"], ["small mass in left lung"])["meteor"]
    precision, recall = 1.0, 3 / 5
    fmean = precision * recall / (0.9 * precision + 0.1 * recall)
    # matches (0,1) (1,2) (2,4): two chunks over three matches
    assert partial == pytest.approx(fmean * (1 - 0.5 * (2 / 3) ** 3))


def test_meteor_without_wordnet_matches_stems_only(monkeypatch):
    monkeypatch.setattr(text_module, "_wordnet_or_none", lambda: None)
    scores = _text(["masses", "big"], ["mass", "large"])
    # "masses" ~ "mass" by Porter stem (one match, one chunk: 1 - 0.5); "big"/"large" need WordNet
    assert scores["meteor"] == pytest.approx((0.5 + 0.0) / 2)
    assert scores["meteor_variant"] == "exact+stem"


def test_meteor_uses_wordnet_synonyms_when_installed(monkeypatch):
    # A corpus stand-in (the real WordNet is not installed here); NLTK compares synonyms with the
    # Porter-stemmed reference word, so the reference is a word that is its own stem.
    lemma = SimpleNamespace(name=lambda: "lung")
    synset = SimpleNamespace(lemmas=lambda: [lemma])
    wordnet = SimpleNamespace(synsets=lambda word: [synset] if word == "pulmo" else [])
    monkeypatch.setattr(text_module, "_wordnet_or_none", lambda: wordnet)
    scores = _text(["pulmo"], ["lung"])
    assert scores["meteor"] == pytest.approx(0.5)
    assert scores["meteor_variant"] == "exact+stem+wordnet"


def test_mean_tokens_whitespace_and_tokenizer(tiny_tokenizer):
    plain = _text(["chest x-ray", "lung"], ["a", "b"])
    assert plain["mean_tokens"] == pytest.approx((2 + 1) / 2)
    assert plain["mean_tokens_unit"] == "whitespace"
    # the BERT pre-tokenizer splits "x-ray" into x, -, ray: 4 + 1 tokens
    tokenized = _text(["chest x-ray", "lung"], ["a", "b"], tokenizer=tiny_tokenizer)
    assert tokenized["mean_tokens"] == pytest.approx((4 + 1) / 2)
    assert tokenized["mean_tokens_unit"].startswith("tokenizer:")


def test_bertscore_absent_with_reason_when_no_local_encoder(capsys):
    scores = _text(["yes"], ["yes"])
    assert not any(key.startswith("bertscore_") and key != "bertscore_skipped" for key in scores)
    assert "no-such-encoder" in scores["bertscore_skipped"]
    assert "BERTScore skipped" in capsys.readouterr().err
    missing_path = score_text(["yes"], ["yes"], bertscore_model="/nonexistent/encoder")
    assert "/nonexistent/encoder does not exist" in missing_path["bertscore_skipped"]


def test_bertscore_with_a_tiny_local_encoder(tiny_bert_dir):
    same = score_text(["the lung is normal"], ["the lung is normal"], bertscore_model=str(tiny_bert_dir))
    for key in ("bertscore_precision", "bertscore_recall", "bertscore_f1"):
        assert same[key] == pytest.approx(1.0, abs=1e-5)
    assert same["bertscore_num_layers"] == 2  # an unknown encoder uses its last layer
    different = score_text(
        ["a cat sat on the mat"], ["the lung is normal"], bertscore_model=str(tiny_bert_dir)
    )
    assert different["bertscore_f1"] < 0.999
    # an empty prediction scores 0 (bert-score's convention) and still counts in the mean
    with_empty = score_text(
        ["", "the lung is normal"], ["yes", "the lung is normal"], bertscore_model=str(tiny_bert_dir)
    )
    assert with_empty["bertscore_f1"] == pytest.approx(0.5, abs=1e-5)


def test_empty_prediction_scores_zero_and_is_counted():
    scores = _text(["", "left lung"], ["left lung", "left lung"])
    assert scores["rougeL_f1"] == pytest.approx(0.5)
    assert scores["meteor"] == pytest.approx((1 - 0.5 * (1 / 2) ** 3) / 2)
    assert scores["n_text"] == 2 and scores["n_empty_predictions_text"] == 1


def test_different_lengths_is_a_clear_error():
    with pytest.raises(ValueError, match="2 predictions and 1 references"):
        _text(["a", "b"], ["a"])


def test_text_metrics_name_their_implementation(tiny_bert_dir):
    scores = score_text(["the lung is normal"], ["the lung is normal"], bertscore_model=str(tiny_bert_dir))
    assert scores["meteor_implementation"].startswith("nltk ")
    assert scores["meteor_implementation"].endswith(scores["meteor_variant"])
    assert "no stemming" in scores["rougeL_implementation"]
    assert scores["rougeL_implementation"].startswith("rouge-score ")
    assert f"encoder {tiny_bert_dir} layer 2" in scores["bertscore_implementation"]
    assert scores["bertscore_implementation"].startswith("bert-score ")
