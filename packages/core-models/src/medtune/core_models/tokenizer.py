"""A real word-level tokenizer for the demo models, built with the `tokenizers` library."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
IMAGE_TOKEN = "<image>"
# LLaVA-Med v1 (the LLaVA v0 recipe): image positions are <im_patch> tokens, wrapped in <im_start> ... <im_end>
# when the checkpoint's config sets mm_use_im_start_end.
V1_IMAGE_PATCH = "<im_patch>"
V1_IMAGE_START_END = ("<im_start>", "<im_end>")


def build_word_tokenizer(texts: Iterable[str], *, extra_words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Return a lower-casing word-level tokenizer whose vocabulary is every word in ``texts``."""
    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies punctuation
    specials = [*SPECIAL_TOKENS.values(), IMAGE_TOKEN]
    trainer = trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1)
    tok.train_from_iterator([*texts, " ".join(extra_words)], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS, padding_side="right")
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return fast
