"""`medtune eval RUN_OR_ADAPTER... --dataset SOURCE`: score tuned models on any reader's data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medtune.tuning.errors import UsageError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="evaluate runs or adapters on a dataset (zero-shot / out-of-distribution)",
        description="Evaluate each RUN_DIR_OR_ADAPTER on --dataset. Adapters that share a base are "
        "swapped into one loaded model, not reloaded.",
    )
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR_OR_ADAPTER")
    p.add_argument("--adapter", action="append", type=Path, default=[], help="an adapter folder (repeatable)")
    p.add_argument("--dataset", required=True, help="dataset folder or file in its published layout")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument(
        "--task", choices=["vqa", "report"], help="default: VQA unless the layout is a report dataset"
    )
    p.add_argument("--model-path", help="base checkpoint (default: the one the run was tuned from)")
    p.add_argument("--max-new-tokens", type=int, help="default 8 for VQA, 128 for reports")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); the paper used 0.2")
    p.add_argument("--bertscore-model", help="local encoder for BERTScore (path or cached name)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--on-invalid",
        choices=["raise", "report"],
        default="raise",
        help="a bad record stops (raise, default) or is skipped and listed in each eval folder's rejected.jsonl",
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--scorer",
        choices=["medtune", "llava-med"],
        default="medtune",
        help="which VQA scorer leads the score summary (default medtune: whole-word closed, "
        "clipped recall; llava-med: LLaVA-Med's published scorer); scores.json always holds both",
    )
    return p


def adapter_dir(path: Path) -> Path:
    """Return the adapter folder of a run directory, or the path itself when it is one."""
    for candidate in (path, path / "adapter"):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise UsageError(
        f"{path} is neither a run directory with adapter/ nor an adapter folder (no manifest.json)"
    )


def run(args: argparse.Namespace) -> int:
    from medtune.core_models import load
    from medtune.eval import eval_dir_name
    from medtune.tuning.adapter import load_adapter, read_manifest
    from medtune.tuning.apply import apply_paradigm
    from medtune.tuning.datasets import MAX_NEW_TOKENS, format_scores, read_records
    from medtune.tuning.evaluate import evaluate
    from medtune.tuning.methods import MethodOptions
    from medtune.tuning.paradigm import Paradigm

    adapters = [adapter_dir(p) for p in [*args.runs, *args.adapter]]
    if not adapters:
        raise UsageError("name at least one run directory or --adapter to evaluate")
    rejected: list = []
    task, records = read_records(args.dataset, args.split, args.task, args.on_invalid, rejected)
    if args.on_invalid == "report":
        print(f"rejected {len(rejected)} invalid record(s) of {args.dataset}/{args.split}")
    dataset_name = Path(args.dataset).name
    max_new = args.max_new_tokens or MAX_NEW_TOKENS[task]
    loaded: dict[tuple, object] = {}
    for adapter in adapters:
        manifest = read_manifest(adapter)
        key = (
            manifest["preset"],
            args.model_path or manifest.get("base_source"),
            manifest["method"],
            manifest["paradigm"],
            json.dumps(manifest.get("method_details", {}), sort_keys=True),
        )
        if (
            key not in loaded
        ):  # one base per distinct (preset, base, method, paradigm); adapters swap in place
            built = load(manifest["preset"], None if key[1] in (None, "random init") else key[1])
            details = manifest.get("method_details") or {}
            options = MethodOptions(lora_rank=details.get("rank"), lora_alpha=details.get("alpha"))
            built.model = apply_paradigm(
                built.model,
                manifest["family"],
                manifest["method"],
                Paradigm.parse(manifest["paradigm"], manifest["family"]),
                options,
            ).model
            loaded = {key: built}  # keep one model in memory at a time
        built = loaded[key]
        load_adapter(built.model, adapter)
        out = adapter.parent / eval_dir_name(dataset_name, args.split)
        if args.on_invalid == "report":
            from medtune.data import write_rejections

            print(f"  listed in {write_rejections(rejected, out)}")
        scores = evaluate(
            built,
            records,
            out_dir=out,
            dataset=dataset_name,
            split=args.split,
            bertscore_model=args.bertscore_model,
            max_new_tokens=max_new,
            temperature=args.temperature,
            batch_size=args.batch_size,
            progress=not args.quiet,
        )
        summary = format_scores(scores, args.scorer)
        print(f"{adapter.parent.name}: {dataset_name}/{args.split}: {summary} -> {out}")
    return 0
