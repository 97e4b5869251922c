"""Data-parallel batches that add up to one process's: padding rows masked, losses weighted by tokens.

With N processes at batch B, accelerate gives every process the same number of batches (``even_batches``):
the epoch's last, partial round is topped up with samples from the epoch's start. Those repeats would be
trained twice, and averaging the processes' mean losses weights a 4-sample batch like an 8-sample one, so
the step would differ from one process at batch N*B. Here the repeats get no labels and each process's
mean loss is weighted by its share of the round's label tokens: the averaged gradient is then the token
mean over exactly the samples one process would have seen.
"""

from __future__ import annotations

import torch

from medtune.data import IGNORE_INDEX


def real_rows(batch_in_iteration: int, samples: int, batch_size: int, rank: int, processes: int) -> int:
    """Return how many leading rows of this process's batch are real samples (the rest repeat earlier ones).

    ``batch_in_iteration`` counts this process's batches since the loader started; ``samples`` is how many the
    sampler yields in that iteration. Accelerate deals batch ``j`` of the plain batch sampler to process
    ``j % processes`` and appends any top-up after a batch's real samples.
    """
    first = (batch_in_iteration * processes + rank) * batch_size
    return max(0, min(batch_size, samples - first))


def label_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Return the number of positions a causal or decoder loss averages over (labels shifted by one)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


def weight_padding(batch: dict, real: int, accelerator) -> float:
    """Mask the top-up rows of ``batch`` in place; return the factor for this process's mean loss.

    The factor is this process's label tokens times the process count over the round's label tokens, so
    that averaging the processes' weighted losses gives the round's token mean. A process with no real row
    keeps its labels (a mean over no tokens would be NaN) and gets factor 0.
    """
    labels = batch.get("labels")
    if labels is None or accelerator.num_processes == 1:
        return 1.0
    mine = torch.zeros((), dtype=torch.long, device=labels.device)
    if real > 0:
        labels[real:] = IGNORE_INDEX
        mine = label_tokens(labels)
    total = accelerator.reduce(mine.clone(), "sum")
    return 0.0 if int(total) == 0 else float(mine) * accelerator.num_processes / float(total)
