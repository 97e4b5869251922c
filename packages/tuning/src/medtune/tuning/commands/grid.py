"""`medtune grid SPEC`: the study's experiment grid in one command (resumable), tables and figures at the end."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from medtune.tuning.errors import UsageError


def add_parser(sub) -> argparse.ArgumentParser:
    from medtune.tuning.grid_spec import built_in_specs

    names = ", ".join(built_in_specs())
    p = sub.add_parser(
        "grid",
        help="train and score a grid of methods x paradigms x learning rates x seeds; write the tables",
        description="Run every cell of SPEC (a TOML/YAML file or a built-in spec: "
        f"{names}) through `train` and `eval`, choose each method's learning rate on the validation split, "
        "and write the paper's tables and figures. Running it again skips finished cells and resumes a "
        "killed one.",
    )
    p.add_argument("spec", nargs="?", help=f"grid spec file, or a built-in spec ({names})")
    p.add_argument(
        "--quick", action="store_true", help="the built-in few-minute demo spec (same as SPEC=quick)"
    )
    p.add_argument(
        "--output-dir", default="runs", help="the grid goes to OUTPUT_DIR/grid-<name> (default: runs)"
    )
    p.add_argument("--model-path", help="your checkpoint for every experiment (a spec of one family)")
    p.add_argument("--preset", help="architecture preset of --model-path, e.g. llava-med-v1.5")
    p.add_argument("--dataset", help="training dataset (its validation and test splits are used too)")
    p.add_argument("--ood-dataset", help="the out-of-distribution evaluation set (e.g. VQA-RAD)")
    p.add_argument("--zero-shot-dataset", help="the zero-shot evaluation set (e.g. MIMIC-CXR-JPG)")
    p.add_argument("--lrs", help="comma-separated learning rates for every method, e.g. 1e-5,2e-5,1e-4")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting for every cell, e.g. max_steps=20",
    )
    p.add_argument("--show", action="store_true", help="print the spec's cells and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _numbers(text: str | None, kind, flag: str) -> list | None:
    if not text:
        return None
    try:
        return [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a comma-separated list of numbers") from None


def _settings(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {pair!r}: write KEY=VALUE, e.g. --set max_steps=20")
        try:
            out[key.strip().replace("-", "_")] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip().replace("-", "_")] = value  # a bare word, e.g. scheduler=linear
    return out


def run(args: argparse.Namespace) -> int:
    from medtune.tuning.grid_spec import read_spec, with_overrides

    if args.quick and args.spec:
        raise UsageError("pass a SPEC or --quick, not both")
    if not args.quick and not args.spec:
        raise UsageError("name a grid spec (a TOML/YAML file or a built-in one), or pass --quick")
    spec = with_overrides(
        read_spec("quick" if args.quick else args.spec),
        model_path=args.model_path,
        preset=args.preset,
        dataset=args.dataset,
        evals={k: v for k, v in (("ood", args.ood_dataset), ("zero-shot", args.zero_shot_dataset)) if v},
        lrs=_numbers(args.lrs, float, "--lrs"),
        seeds=_numbers(args.seeds, int, "--seeds"),
        settings=_settings(args.set),
    )
    grid_dir = Path(args.output_dir) / f"grid-{spec.name}"
    cells = spec.cells()
    print(
        f"medtune grid {spec.name} | {len(cells)} cell(s) | rates chosen by {spec.select if spec.sweeps() else '(one rate each)'}"
    )
    print(
        f"  train on {', '.join(dict.fromkeys(e.train for e in spec.experiments))}; score on "
        + "; ".join(f"{e.dataset} {e.split} ({e.role})" for e in spec.evals)
    )
    if args.show:
        for cell in cells:
            print(f"  {cell.id}")
        return 0
    from medtune.tuning.grid import run_grid  # heavy imports only once the spec is valid

    result = run_grid(spec, grid_dir, progress=not args.quiet)
    print("\n== grid summary ==")
    print(f"cells trained now    : {len(result.trained)}")
    print(f"cells already done   : {len(result.skipped)}")
    print(f"time                 : {result.seconds:.0f} s")
    print(f"report               : {result.written[0]}")
    for path in result.written[1:]:
        print(f"  {path}")
    print_leaders(result.tables)
    return 0


def print_leaders(tables) -> None:
    """Print each table's three best cells and its best LN-tuning cell, so the outcome reads at a glance."""
    from medtune.eval.grid_report import leaders

    print("\nbest cells per table (the whole tables are in the report):")
    for table in tables:
        metric, ranked = leaders(table)
        if not ranked:
            continue
        shown = [*ranked[:3], next(((e, v) for e, v in ranked[3:] if e.method.startswith("ln")), None)]
        cells = " | ".join(f"{e.label} {v:.1f}" for e, v in filter(None, shown))
        print(f"  {table.title} ({metric}): {cells}")
