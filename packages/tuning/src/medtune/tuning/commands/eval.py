"""`medtune eval RUN_OR_ADAPTER... --dataset SOURCE`: score tuned models on any reader's data."""

from __future__ import annotations

import argparse
from pathlib import Path

from medtune.tuning.commands import add_scorer_flag
from medtune.tuning.errors import UsageError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="evaluate runs or adapters on a dataset (zero-shot / out-of-distribution)",
        description="Evaluate each RUN_DIR_OR_ADAPTER on --dataset. Adapters that share a base are "
        "swapped into one loaded model, not reloaded. With --model-path and no adapter, score the untuned "
        "base (a zero-shot baseline).",
    )
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR_OR_ADAPTER")
    p.add_argument("--adapter", action="append", type=Path, default=[], help="an adapter folder (repeatable)")
    p.add_argument("--dataset", required=True, help="dataset folder or file in its published layout")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument(
        "--columns",
        metavar="MAP",
        help="column names of a Hugging Face table where they differ: question=Q,answer=A,image=I,answer_type=T",
    )
    p.add_argument(
        "--image-folder",
        metavar="PATH",
        help="folder the dataset's image paths are relative to (may not be left)",
    )
    p.add_argument(
        "--task", choices=["vqa", "report"], help="default: VQA unless the layout is a report dataset"
    )
    p.add_argument("--model-path", help="base checkpoint (default: the one the run was tuned from)")
    p.add_argument(
        "--preset", help="the base's preset when scoring --model-path alone (default: found from the folder)"
    )
    p.add_argument("--out", type=Path, help="folder for a base's scores (default: DIR/eval-DATASET-SPLIT)")
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
    add_scorer_flag(p)
    return p


def adapter_dir(path: Path) -> Path:
    """Return the adapter folder of a run directory, or the path itself when it is one."""
    from medtune.tuning.adapter import find_adapter

    return find_adapter(path)


def run(args: argparse.Namespace) -> int:
    from medtune.eval import eval_dir_name, format_scores
    from medtune.tuning.adapter import load_adapter, read_manifest
    from medtune.tuning.datasets import MAX_NEW_TOKENS, check_generation_flags, read_records
    from medtune.tuning.evaluate import evaluate
    from medtune.tuning.rebuild import base_for_manifest, load_base_alone, rebuild_key

    check_generation_flags(args.batch_size, args.temperature, args.max_new_tokens)
    adapters = [adapter_dir(p) for p in [*args.runs, *args.adapter]]
    if not adapters and not args.model_path:
        raise UsageError(
            "name at least one run directory or --adapter to evaluate, or --model-path DIR alone to score "
            "the untuned base"
        )
    if args.out is not None and adapters:  # it used to be ignored, scores going to the run instead
        raise UsageError(
            f"--out {args.out} is for a base's scores (--model-path with no run or adapter); a run's scores "
            "always go to RUN/eval-DATASET-SPLIT, so leave --out out"
        )
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file, not a folder; pass the folder the scores go in")
    rejected: list = []
    task, records = read_records(
        args.dataset,
        args.split,
        args.task,
        args.on_invalid,
        rejected,
        columns=args.columns,
        image_folder=args.image_folder,
    )
    if args.on_invalid == "report":
        print(f"rejected {len(rejected)} invalid record(s) of {args.dataset}/{args.split}")
    dataset_name = Path(args.dataset).name
    generation = {
        "max_new_tokens": args.max_new_tokens or MAX_NEW_TOKENS[task],
        "temperature": args.temperature,
        "batch_size": args.batch_size,
        "progress": not args.quiet,
    }

    def score(built, out: Path, name: str) -> None:
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
            **generation,
        )
        print(f"{name}: {dataset_name}/{args.split}: {format_scores(scores, args.scorer)} -> {out}")

    if not adapters:
        built = load_base_alone(args.model_path, args.preset)
        out = args.out or Path(args.model_path) / eval_dir_name(dataset_name, args.split)
        score(built, out, f"{Path(args.model_path).name} (untuned)")
        return 0
    loaded: dict[str, object] = {}
    for adapter in adapters:
        manifest = read_manifest(adapter)
        key = rebuild_key(manifest, args.model_path)
        if (
            key not in loaded
        ):  # one base per distinct (base, method, config, paradigm); adapters swap in place
            loaded = {key: base_for_manifest(manifest, args.model_path, adapter=adapter)}  # one in memory
        built = loaded[key]
        load_adapter(built.model, adapter)
        score(built, adapter.parent / eval_dir_name(dataset_name, args.split), adapter.parent.name)
    return 0
