"""The `llava-med` scorer: LLaVA-Med's batch VQA scorer, rule for rule, so numbers sit beside published ones.

This reimplements the scoring that LLaVA-Med's `llava/eval/run_eval_batch.py` and its
`llava/eval/eval_metrics/` helpers (`glossary.normalize_word`, `evaluate_metrics.calculate_f1score`,
`utils.split_sentence`) perform at commit b9a98a7, the version behind LLaVA-Med's published tables,
quirks included. Each quirk is kept on purpose and named where it happens; `medtune`'s corrected
scorer (`vqa.py`, `normalize.py`) is what to use when the number need not match a published one.
"""

from __future__ import annotations

import re
from collections import Counter

LLAVA_MED_SCORER_VERSION = (
    "llava-med-b9a98a7: LLaVA-Med run_eval_batch.py; closed=raw substring, open=unclipped token recall, "
    "labels exactly OPEN/CLOSED"
)
# LLaVA-Med compares the answer-type label with == : 'CLOSED ' or 'closed' is neither, and dropped.
LLAVA_MED_LABELS = {"OPEN": "open", "CLOSED": "closed"}

# The 21 characters LLaVA-Med treats as punctuation (":", "#", "'", "*", "%" and CJK marks are not).
_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# LLaVA-Med's period pattern was meant to spare "3.5"; its look-behind is written as a look-ahead
# ("(?!<=\d)"), which never fires, so every period not followed by a digit is deleted (not spaced).
_PERIOD = re.compile(r"\.(?!\d)")
# ... and re.UNICODE is passed where Pattern.sub takes `count`: only the first 32 periods go.
_PERIOD_COUNT = 32
LLAVA_MED_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# The VQA-evaluation contraction table LLaVA-Med ships, less the entries that can never fire after
# lower-casing (keys with capitals such as "Im") or that map a word to itself ("let's", "she's").
LLAVA_MED_CONTRACTIONS = {
    "cant": "can't",
    "didnt": "didn't",
    "dont": "don't",
    "hasnt": "hasn't",
    "isnt": "isn't",
    "wasnt": "wasn't",
    "wont": "won't",
    "aint": "ain't",
    "arent": "aren't",
    "couldnt": "couldn't",
    "doesnt": "doesn't",
    "hadnt": "hadn't",
    "havent": "haven't",
    "mightnt": "mightn't",
    "mustnt": "mustn't",
    "neednt": "needn't",
    "oughtnt": "oughtn't",
    "shant": "shan't",
    "shouldnt": "shouldn't",
    "werent": "weren't",
    "wouldnt": "wouldn't",
    "couldve": "could've",
    "mightve": "might've",
    "mustve": "must've",
    "shouldve": "should've",
    "wouldve": "would've",
    "notve": "not've",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "somebody'd": "somebodyd",  # reversed in the original table; kept as it scores
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "maam": "ma'am",
    "oclock": "o'clock",
    "twas": "'twas",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
}


def llava_med_normalize(text: str) -> str:
    """Return `text` normalised exactly as LLaVA-Med's scorer does (lower-casing first, as its caller does)."""
    if not isinstance(text, str):
        raise TypeError(f"llava_med_normalize takes one answer as text (a str), not a {type(text).__name__}.")
    text = text.lower()
    # Whether a punctuation mark becomes a space or vanishes is decided on the input text as a whole:
    # it vanishes when it touches a space anywhere, and every mark vanishes once any "digit,digit"
    # appears ("1,000 x-ray" -> "1000 xray", but "x-ray" alone -> "x ray").
    vanish_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if vanish_all or touches_space else " ")
    out = _PERIOD.sub("", out, count=_PERIOD_COUNT)
    words = [LLAVA_MED_NUMBER_WORDS.get(word, word) for word in out.split()]
    words = [LLAVA_MED_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES]
    return " ".join(words).replace(",", "")


def llava_med_hit(prediction: str, answer: str) -> float:
    """Return 1.0 when the normalised answer is a raw substring of the normalised prediction, else 0.0.

    This is LLaVA-Med's closed ("yes/no accuracy") test, and its "open accuracy" row on open questions.
    """
    # A raw substring test: "no" is found in "normal", "nodule" and "not"; an empty answer in anything.
    return float(llava_med_normalize(answer) in llava_med_normalize(prediction))


def llava_med_recall(prediction: str, answer: str) -> float:
    """Return LLaVA-Med's open-question recall, the number its tables report as "Open"."""
    # The caller normalises, then calculate_f1score normalises the already-normalised text again.
    pred = Counter(llava_med_normalize(llava_med_normalize(prediction)).split())
    gold = Counter(llava_med_normalize(llava_med_normalize(answer)).split())
    if not pred or not gold:
        return 0.0
    # True positives count the prediction's repeats, unclipped: "lung lung" vs "left lung" is 2/3.
    tp = sum(count for word, count in pred.items() if word in gold)
    fn = sum(count for word, count in gold.items() if word not in pred)
    return tp / (tp + fn) if tp else 0.0
