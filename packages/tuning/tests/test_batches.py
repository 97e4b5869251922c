"""make_collator follows the checkpoint: its image token, and LLaVA-Med v1's <im_start>/<im_end> wrapping."""

from __future__ import annotations

from medtune.core_models import load
from medtune.data import demo_dataset, read_vqa
from medtune.tuning.batches import make_collator


def test_a_v1_style_checkpoint_gets_its_image_positions_wrapped(demo_cache):
    built = load("tiny-llava")
    records = read_vqa(demo_dataset("downstream"), "test")[:2]
    plain = make_collator(built, train=False)(records)["input_ids"]

    built.tokenizer.add_special_tokens({"additional_special_tokens": ["<im_start>", "<im_end>"]})
    built.model.config.mm_use_im_start_end = True  # what a converted LLaVA-Med v1 release carries
    wrapped = make_collator(built, train=False)(records)["input_ids"]

    start, end = built.tokenizer.convert_tokens_to_ids(["<im_start>", "<im_end>"])
    image = built.model.config.image_token_index
    n = built.num_image_tokens
    for row in wrapped.tolist():
        at = row.index(start)
        assert row[at + 1 : at + 1 + n] == [image] * n and row[at + 1 + n] == end
    assert wrapped.shape[1] == plain.shape[1] + 2  # two more tokens per prompt, nothing else changed
