"""The paper's parameter accounting (Tables 1-2): trainable and PEFT counts against the base model's sizes.

Conventions, checked against every row of Table 1 (MISS) and the self-consistent rows of Table 2 (LLaVA-Med v1):
- totals and group sizes are those of the base model: tensors a method adds (LoRA matrices, prefix encoders) count
  as trainable and PEFT parameters but not toward the total (Table 1: LoRA's 24.05% = 86,929,152 / 361,478,972);
- ``trainable_ratio`` = trainable / base total; ``peft_ratio`` = PEFT-tuned / base size of the PEFT groups;
- tied tensors count once (BLIP's decoder head shares the decoder's word embeddings).
"""

from __future__ import annotations

from medtune.core_models import group_of
from medtune.tuning.methods import get_method


def added_names(tuned) -> frozenset[str]:
    """Return the names of the tensors the method added to the base model (empty for intrinsic methods)."""
    return tuned.peft if get_method(tuned.method).kind == "adapter" else frozenset()


def paper_counts(tuned) -> dict:
    """Return {total_params, trainable_params, trainable_ratio, peft_params, peft_ratio, groups} as the paper counts."""
    added = added_names(tuned)
    groups = {
        g: {"state": tuned.paradigm.state(g), "params": 0, "trainable": 0, "peft": 0}
        for g in tuned.paradigm.groups
    }
    total = trainable = peft = 0
    for name, param in tuned.model.named_parameters():
        n = param.numel()
        row = groups[group_of(name, tuned.family)]
        if name not in added:
            row["params"] += n
            total += n
        if name in tuned.trainable:
            row["trainable"] += n
            trainable += n
        if name in tuned.peft:
            row["peft"] += n
            peft += n
    peft_group_params = sum(r["params"] for r in groups.values() if r["state"] == "PEFT")
    return {
        "total_params": total,
        "trainable_params": trainable,
        "trainable_ratio": trainable / total if total else 0.0,
        "peft_params": peft,
        "peft_ratio": peft / peft_group_params if peft_group_params else 0.0,
        "groups": groups,
    }
