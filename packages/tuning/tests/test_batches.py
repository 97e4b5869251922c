"""make_collator follows the checkpoint: its image token, and LLaVA-Med v1's <im_start>/<im_end> wrapping."""

from __future__ import annotations

import pytest

from medtune.core_models import load
from medtune.data import demo_dataset, read_vqa
from medtune.tuning.batches import (
    LengthGroupedShuffle,
    cached_sample_lengths,
    make_collator,
    padding_fraction,
    sample_lengths,
)
from medtune.tuning.checkpoint import EpochShuffle


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


def test_sample_lengths_are_the_collated_row_lengths(demo_cache):
    records = read_vqa(demo_dataset("downstream"), "train")[:12]
    for family in ("tiny-llava", "tiny-miss"):
        built = load(family)
        collator = make_collator(built, train=True)
        batch = collator(records)
        lengths = sample_lengths(collator, records)
        if family == "tiny-llava":
            assert lengths == batch["attention_mask"].sum(1).tolist()
        else:  # BLIP: question tokens plus the answer's decoder tokens
            expected = batch["attention_mask"].sum(1) + batch["decoder_attention_mask"].sum(1)
            assert lengths == expected.tolist()


def test_token_counts_are_cached_per_data_and_collator(demo_cache, monkeypatch):
    import medtune.tuning.batches as batches

    records = read_vqa(demo_dataset("downstream"), "train")[:40]
    built = load("tiny-llava")
    collator = make_collator(built, train=True)
    expected = sample_lengths(collator, records)
    assert cached_sample_lengths(collator, records, "data-1") == expected

    def counted_again(*args, **kwargs):
        raise AssertionError("counted again although the cache holds these lengths")

    monkeypatch.setattr(batches, "sample_lengths", counted_again)
    assert cached_sample_lengths(make_collator(built, train=True), records, "data-1") == expected
    with pytest.raises(AssertionError, match="counted again"):  # other data: counted afresh
        cached_sample_lengths(collator, records, "data-2")
    with pytest.raises(AssertionError, match="counted again"):  # another collator (token budget): afresh
        cached_sample_lengths(make_collator(built, train=True, max_length=1024), records, "data-1")


def test_length_grouped_order_is_a_seeded_permutation_with_less_padding():
    lengths = [(7 * i) % 53 + 3 for i in range(400)]
    grouped = LengthGroupedShuffle(lengths, seed=3, window=16 * 8)
    plain = EpochShuffle(len(lengths), seed=3)
    first = list(grouped)
    assert sorted(first) == list(range(400))
    assert first == list(LengthGroupedShuffle(lengths, seed=3, window=128))  # same seed and epoch: same order
    grouped.start(1)
    assert list(grouped) != first  # a new order each epoch
    grouped.start(0, skip_samples=100)
    assert list(grouped) == first[100:]  # a resumed epoch skips exactly what was seen
    assert padding_fraction(lengths, first, 16) < 0.5 * padding_fraction(lengths, list(plain), 16)


def test_group_by_length_trains_from_the_length_grouped_order(tmp_path, demo_cache, monkeypatch):
    import json

    import medtune.tuning.run_data as run_data
    from medtune.tuning.cli import main

    orders = []

    class Recording(LengthGroupedShuffle):
        def __iter__(self):
            order = list(super().__iter__())
            orders.append((self.lengths.tolist(), order))
            return iter(order)

    monkeypatch.setattr(run_data, "LengthGroupedShuffle", Recording)
    fast = ["--no-eval-before", "--no-eval", "--quiet", "--batch-size", "4", "--max-steps", "2"]
    assert main(["train", "llava", "ln", *fast, "--group-by-length", "--output-dir", str(tmp_path)]) == 0
    lengths, order = orders[0]
    assert sorted(order) == list(range(len(lengths)))
    plain = list(EpochShuffle(len(lengths), 0))
    assert padding_fraction(lengths, order, 4) < padding_fraction(lengths, plain, 4)
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "config.json").read_text())["group_by_length"] is True
