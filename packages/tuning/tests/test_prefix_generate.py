"""Prefix tuning survives generation: cached greedy decoding equals recomputing the whole sequence every step."""

from __future__ import annotations

import torch

from medtune.core_models import load
from medtune.data import demo_dataset, read_vqa
from medtune.tuning.apply import apply_paradigm
from medtune.tuning.batches import make_collator
from medtune.tuning.evaluate import predict  # generate_answers on collated batches
from medtune.tuning.paradigm import Paradigm

NEW_TOKENS = 6


def greedy_without_cache(model, batch: dict, eos: int) -> torch.Tensor:
    """Return NEW_TOKENS greedy ids of shape (batch, NEW_TOKENS), the whole sequence re-run each step (no cache)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    out = []
    for _ in range(NEW_TOKENS):
        logits = model(
            input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"], use_cache=False
        ).logits
        logits[:, -1, eos] = float("-inf")  # as min_new_tokens does, so every step decodes
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out.append(nxt)
        ids = torch.cat([ids, nxt], 1)
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return torch.cat(out, 1)


def test_prefix_tuned_llava_generates_what_a_full_recompute_predicts(demo_cache):
    built = load("tiny-llava")
    tuned = apply_paradigm(built.model, "llava", "prefix", Paradigm.parse("F,F,PEFT,F", "llava"))
    built.model = tuned.model.eval()
    records = read_vqa(demo_dataset("downstream"), "test")[:3]
    batch = make_collator(built, train=False)([records[0]])
    batch = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        base_logits = built.model(**batch).logits
        torch.manual_seed(0)
        for p in tuned.model.parameters():
            if p.requires_grad:  # a prefix that is not near zero, so it changes what the model says
                p.normal_(0, 0.5)
        prefixed_logits = built.model(**batch).logits
    assert not torch.allclose(base_logits, prefixed_logits, atol=1e-3)

    answers = predict(built, records, batch_size=1, max_new_tokens=NEW_TOKENS, progress=False)

    eos = built.tokenizer.eos_token_id
    for record, answer in zip(records, answers, strict=True):
        first = answer.split()[0].rstrip(".")  # the demo's answers may end a word with a period token
        assert first in built.tokenizer.get_vocab()
        batch = make_collator(built, train=False)([record])
        batch = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
        with torch.no_grad():
            want = greedy_without_cache(built.model, batch, eos)
            # The same cached generate() that generate_answers runs, kept going past <eos> for NEW_TOKENS steps.
            got = built.model.generate(
                **batch,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                eos_token_id=eos,
            )[:, batch["input_ids"].shape[1] :]
        assert got.tolist() == want.tolist()
        assert built.tokenizer.decode(want[0, :1]) == first  # generate_answers' first word agrees
