"""A run's data: the records it trains, scores and validates on, how the run reports them, its train loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from torch.utils.data import DataLoader

from medtune.core_models import Built
from medtune.data import Rejection, demo_dataset, write_rejections
from medtune.data.run_files import REJECTED
from medtune.data.workers import CarryErrors
from medtune.tuning.batches import GROUP_WINDOW, LengthGroupedShuffle, cached_sample_lengths, make_collator
from medtune.tuning.checkpoint import EpochShuffle
from medtune.tuning.datasets import (
    MAX_NEW_TOKENS,
    check_held_out,
    data_fingerprint,
    eval_layout,
    read_records,
)
from medtune.tuning.paradigm import Paradigm
from medtune.tuning.recipes import TrainConfig


@dataclass
class RunData:
    """The records a run trains and scores on, and where they come from."""

    source: Path
    test_source: Path
    task: str
    train: list
    test: list  # empty unless scored before or after tuning
    validation: list  # empty unless --eval-every
    rejected: list[Rejection]
    max_new_tokens: int


def read_data(cfg: TrainConfig) -> RunData:
    """Return the train records and, where the run scores or validates, the test and validation ones."""
    source = Path(cfg.dataset).expanduser() if cfg.dataset else demo_dataset("downstream")
    rejected: list[Rejection] = []
    layout = {"columns": cfg.columns, "image_folder": cfg.image_folder}
    task, train_records = read_records(source, "train", cfg.task, cfg.on_invalid, rejected, **layout)
    test_source = Path(cfg.eval_dataset).expanduser() if cfg.eval_dataset else source
    scored = cfg.eval_after or cfg.eval_before
    if scored and test_source == source:
        check_held_out(source, task, "test")
    if cfg.eval_every:
        check_held_out(source, task, "validation")
    test = (
        read_records(
            test_source, "test", task, cfg.on_invalid, rejected, **eval_layout(source, test_source, layout)
        )[1]
        if scored
        else []
    )
    validation = (
        read_records(source, "validation", task, cfg.on_invalid, rejected, **layout)[1]
        if cfg.eval_every
        else []
    )
    max_new_tokens = cfg.max_new_tokens or MAX_NEW_TOKENS[task]
    return RunData(source, test_source, task, train_records, test, validation, rejected, max_new_tokens)


def describe_run(cfg: TrainConfig, paradigm: Paradigm, data: RunData) -> dict:
    """Return the run's config as config.json holds it (resume compares against it); the model's part comes later."""
    return {
        **cfg.to_json(),
        "dataset": {
            "source": str(data.source.resolve()),
            "name": data.source.name,
            "task": data.task,
            "fingerprint": data_fingerprint(data.train, data.source),
        },
        "groups": list(paradigm.groups),
    }


def announce_data(
    accelerator: Accelerator, cfg: TrainConfig, data: RunData, run_dir: Path, *, resuming: bool
):
    """Say where the run and its data are; under --on-invalid report, list the rejected records."""
    say = accelerator.print
    say(f"run directory: {run_dir}{' (resuming)' if resuming else ''}")
    unit = "questions" if data.task == "vqa" else "studies"
    say(f"data: {data.source} ({data.task}: {len(data.train)} train / {len(data.test)} test {unit})")
    if cfg.on_invalid == "report":
        if accelerator.is_main_process:
            write_rejections(data.rejected, run_dir)
        say(f"rejected {len(data.rejected)} invalid record(s), each listed in {run_dir / REJECTED}")


def make_loader(
    cfg: TrainConfig, built: Built, records: list, fingerprint: str
) -> tuple[EpochShuffle, DataLoader]:
    """Return the resumable sampler (length-grouped with --group-by-length) and the train loader over it.

    ``fingerprint`` is the records' data_fingerprint: the token counts of a length-grouped order are
    cached under it.
    """
    collator = make_collator(built, train=True)
    if cfg.group_by_length:
        lengths = cached_sample_lengths(collator, records, fingerprint)
        sampler = LengthGroupedShuffle(lengths, cfg.seed, GROUP_WINDOW * cfg.batch_size)
    else:
        sampler = EpochShuffle(len(records), cfg.seed)
    workers = cfg.dataloader_num_workers
    loader = DataLoader(
        records,
        batch_size=cfg.batch_size,
        sampler=sampler,
        # In workers, a bad sample's error comes back as data and is raised in the loop, sentence intact.
        collate_fn=CarryErrors(collator) if workers else collator,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    return sampler, loader
