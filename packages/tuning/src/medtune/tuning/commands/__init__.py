"""One module per `medtune` sub-command, each with `add_parser(subparsers)` and `run(args) -> int`."""

from __future__ import annotations

import argparse

# medtune.eval.vqa.ScorerVariant's values, written out: importing eval would cost --help its torch-free start.
SCORERS = ("medtune", "llava-med")


def add_scorer_flag(p: argparse.ArgumentParser) -> None:
    """Add --scorer, the VQA scorer variant that leads a score summary (train and eval share it)."""
    p.add_argument(
        "--scorer",
        choices=SCORERS,
        default="medtune",
        help="which VQA scorer leads the score summary (default medtune: whole-word closed, "
        "clipped recall; llava-med: LLaVA-Med's published scorer); scores.json always holds both",
    )
