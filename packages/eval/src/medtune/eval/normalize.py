"""The `medtune` scorer's answer normalisation (LLaVA-Med's own is reproduced in `llava_med.py`)."""

from __future__ import annotations

import re
import unicodedata

from medtune.eval.llava_med import LLAVA_MED_CONTRACTIONS, LLAVA_MED_NUMBER_WORDS

# Number words become digits so "two" and "2" agree, as in the VQA evaluation (extended to twenty).
_NUMBER_WORDS = {
    **LLAVA_MED_NUMBER_WORDS,
    **{
        w: str(n)
        for n, w in enumerate(
            (
                "eleven",
                "twelve",
                "thirteen",
                "fourteen",
                "fifteen",
                "sixteen",
                "seventeen",
                "eighteen",
                "nineteen",
                "twenty",
            ),
            start=11,
        )
    },
}
_ARTICLES = frozenset({"a", "an", "the"})
# Apostrophe-less spellings mapped to their contraction so "isnt" and "isn't" agree: the VQA table
# LLaVA-Med uses, less its one reversed entry ("somebody'd" -> "somebodyd"). Forms that are also
# ordinary words ("ill", "its", "were", "well", "shed", "id") are in neither.
_CONTRACTIONS = {key: value for key, value in LLAVA_MED_CONTRACTIONS.items() if key != "somebody'd"}
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
# A period is punctuation unless it sits inside a number ("3.5").
_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")
_PUNCTUATION = re.compile(r"[^\w\s'.]")
_QUOTES = "'\u2018\u2019"
# Scripts written without spaces between words (CJK ideographs, kana): each character is a token.
_NO_SPACE_SCRIPT = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")
# End-of-answer markers a generator may leave in the text (LLaVA's "###" separator, EOS tokens):
# the answer is the text before them; what follows is the next turn or padding.
_END_MARKERS = re.compile(r"###|</s>|<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|<\|end\|>")


def strip_end_markers(text: str) -> str:
    """Return the first non-empty piece of `text` before an end marker ("###", "</s>", ...)."""
    for piece in _END_MARKERS.split(text):
        if piece.strip():
            return piece
    return ""


def normalize_answer(text: str) -> str:
    """Return `text` cut at end markers, NFKC-folded and lower-cased, with punctuation, articles,
    number words and contractions normalised and characters of unspaced scripts (Chinese) spaced."""
    if not isinstance(text, str):
        raise TypeError(f"normalize_answer takes one answer as text (a str), not a {type(text).__name__}.")
    text = unicodedata.normalize("NFKC", strip_end_markers(text)).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = _DIGIT_COMMA.sub("", text)
    text = _PERIOD.sub(" ", text)
    text = _PUNCTUATION.sub(" ", text).replace("_", " ")
    text = _NO_SPACE_SCRIPT.sub(r" \1 ", text)
    words = []
    for word in text.split():
        word = word.strip(_QUOTES)
        if not word or word in _ARTICLES:
            continue
        word = _NUMBER_WORDS.get(word, word)
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def answer_tokens(text: str) -> list[str]:
    """Return the normalised tokens of `text`: words, and single characters of Chinese or Japanese."""
    return normalize_answer(text).split()
