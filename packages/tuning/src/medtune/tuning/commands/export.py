"""`medtune export RUN_DIR --merge --out DIR`: a full checkpoint with the adapter merged into the base."""

from __future__ import annotations

import argparse
from pathlib import Path

from medtune.tuning.errors import UsageError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="write a full checkpoint with a run's adapter merged",
        description="Merge RUN_DIR_OR_ADAPTER into its base (LoRA via PEFT's merge; LN and other tuned tensors "
        "copied) and save a checkpoint that transformers serves as it is: safetensors shards in the base's "
        "precision, tokenizer, processor with a chat template, generation config and a model card.",
    )
    p.add_argument("source", type=Path, metavar="RUN_DIR_OR_ADAPTER")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the weights (required)")
    p.add_argument("--out", type=Path, required=True, help="new folder for the merged checkpoint")
    p.add_argument("--model-path", help="base checkpoint (default: the one the run was tuned from)")
    p.add_argument("--force", action="store_true", help="replace --out even when it is not empty")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    return p


def run(args: argparse.Namespace) -> int:
    from medtune.tuning.adapter import find_adapter
    from medtune.tuning.export import export_merged

    if not args.merge:
        raise UsageError(
            "medtune export writes merged checkpoints; pass --merge (the adapter itself is in RUN_DIR/adapter)"
        )
    out = export_merged(
        find_adapter(args.source),
        args.out,
        args.model_path,
        force=args.force,
        max_shard_size=args.max_shard_size,
    )
    print(f"merged checkpoint written to {out}")
    return 0
