"""The step's loss computes the output head only at labelled positions, and equals the model's own loss."""

from __future__ import annotations

import pytest
import torch

from medtune.core_models import load
from medtune.data import demo_dataset, read_reports, read_vqa
from medtune.tuning.apply import apply_paradigm
from medtune.tuning.batches import make_collator
from medtune.tuning.loss import keeps_logits, model_loss, predicting_positions
from medtune.tuning.paradigm import Paradigm


def tuned_batch(preset: str, family: str, method: str, reports: bool = False):
    """Return (model, batch) of ``preset`` tuned by ``method``, on four demo questions (or reports)."""
    built = load(preset)
    tuned = apply_paradigm(built.model, family, method, Paradigm.parse(None, family))
    built.model = tuned.model
    records = (
        read_reports(demo_dataset("iu-xray"), "train")[:4]
        if reports
        else read_vqa(demo_dataset("downstream"), "train")[:4]
    )
    batch = make_collator(built, train=True)(records)
    batch.pop("qids", None)
    return tuned.model.train(), batch


def head_rows(model: torch.nn.Module, run) -> list[int]:
    """Return the number of positions the output head computed in each call during ``run()``."""
    head = next(m for n, m in model.named_modules() if n.endswith("lm_head"))
    rows: list[int] = []
    hook = head.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[1]))
    try:
        run()
    finally:
        hook.remove()
    return rows


def test_predicting_positions_are_the_ones_before_each_label():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, -100, -100, 7, -100]])
    assert predicting_positions(labels).tolist() == [1, 2]


@pytest.mark.parametrize(
    ("method", "reports"), [("ln", False), ("lora", False), ("prefix", False), ("ln", True)]
)
def test_the_loss_equals_the_models_own_and_computes_only_labelled_logits(demo_cache, method, reports):
    model, batch = tuned_batch("tiny-llava", "llava", method, reports)
    assert keeps_logits(model)
    torch.manual_seed(0)  # the same dropout masks (LoRA's) in both forwards
    own = model(**batch).loss
    own.backward()
    own_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    losses = []
    torch.manual_seed(0)
    rows = head_rows(model, lambda: losses.append(model_loss(model, batch)))
    losses[0].backward()
    torch.testing.assert_close(losses[0], own, rtol=1e-5, atol=1e-6)
    for name, grad in own_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)
    labelled = int((batch["labels"][:, 1:] != -100).any(0).sum())
    assert rows == [labelled] and labelled < batch["input_ids"].shape[1] / 2


def test_a_model_without_logits_to_keep_computes_its_own_loss(demo_cache):
    model, batch = tuned_batch("tiny-miss", "miss", "ln")
    assert not keeps_logits(model)
    torch.testing.assert_close(model_loss(model, batch), model(**batch).loss)
