"""`medtune train FAMILY METHOD [flags]`: tune, evaluate and summarise (no flags: the built-in demo)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from medtune.core_models import FAMILY_GROUPS
from medtune.tuning import knobs
from medtune.tuning.commands import add_scorer_flag
from medtune.tuning.errors import UsageError
from medtune.tuning.methods import BUILTIN_METHODS
from medtune.tuning.paradigm import DEFAULT_PARADIGM, Paradigm
from medtune.tuning.recipes import (
    DEMO_FAMILIES,
    SETTINGS,
    read_config,
    recipe_defaults,
    recipe_of,
    resolve_config,
)
from medtune.tuning.trackers import check_trackers

EPILOG = """\
Every setting is also a config-file key (--config run.toml or run.yaml; the flag's name with underscores,
e.g. learning_rate or lr) and can be given as --set KEY=VALUE (applied after the other flags).
Precedence: recipe defaults, then the config file, then flags. `medtune train FAMILY METHOD --help` shows
the defaults of that run's recipe."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="tune a model with a method under a paradigm, then evaluate it",
        description="Tune FAMILY's model with METHOD. With no other flags: LN-tune the built-in demo.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    p.add_argument(
        "-h", "--help", action=RecipeHelp, help="show this help (with FAMILY METHOD: that run's defaults)"
    )
    p.add_argument("family", help=f"model family: {', '.join(FAMILY_GROUPS)}")
    p.add_argument("method", help=f"tuning method: {', '.join(BUILTIN_METHODS)}")
    p.add_argument("--preset", help="architecture preset (default: the family's tiny demo model)")
    default_paradigms = "; ".join(f"{f} {s}" for f, s in DEFAULT_PARADIGM.items())
    p.add_argument("--paradigm", help=f"one state per group: T, F or PEFT (default: {default_paradigms})")
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML or YAML file of settings (flags override it)"
    )
    p.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one setting by its config key, e.g. --set lr=1e-4 (repeatable)",
    )
    p.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue a killed run from its last checkpoint"
    )
    p.add_argument(
        "--num-processes",
        type=int,
        help="run data-parallel in N processes through `accelerate launch` (see packages/tuning/README.md)",
    )
    p.add_argument("--accelerate-config", type=Path, help="accelerate config file for --num-processes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_scorer_flag(p)
    settings = p.add_argument_group("settings (recipe defaults shown; each is also a config key)")
    p.set_defaults(knob_actions=[a for cls in SETTINGS for a in knobs.add_flags(settings, cls)])
    return p


def default_text(name: str, default, family: str | None, method: str | None, recipe: str | None) -> str:
    """Return the help's default for setting ``name``: that run's, or each recipe's when the run is not named."""
    families = [family] if family else list(FAMILY_GROUPS)
    methods = [method] if method else list(BUILTIN_METHODS)
    values: dict[tuple[str, str], set[str]] = {}
    for f in families:
        recipes = [recipe] if recipe else ["demo", "paper"] if f in DEMO_FAMILIES else ["paper"]
        for r in recipes:
            for m in methods:
                values.setdefault((r, f), set()).add(knobs.show(recipe_defaults(f, m, r).get(name, default)))
    everything = set().union(*values.values())
    if len(everything) == 1:
        return f"default: {everything.pop()}"
    parts = []
    for r in ("demo", "paper"):
        per_family = {f: v for (rr, f), v in values.items() if rr == r}
        if not per_family:
            continue
        if len(set().union(*per_family.values())) == 1:
            parts.append(f"{r} {next(iter(next(iter(per_family.values()))))}")
            continue
        parts.append(
            f"{r} "
            + ", ".join(
                f"{f} {' to '.join(sorted(v, key=float)[:: len(v) - 1]) if len(v) > 1 else next(iter(v))}"
                + (" by method" if len(v) > 1 else "")
                for f, v in per_family.items()
            )
        )
    return "recipe default: " + "; ".join(parts)


class RecipeHelp(argparse.Action):
    """--help that fills each setting's default from the recipe of the run named so far (FAMILY METHOD)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        family = namespace.family if getattr(namespace, "family", None) in FAMILY_GROUPS else None
        method = namespace.method if getattr(namespace, "method", None) in BUILTIN_METHODS else None
        recipe = None
        if family and method:
            preset = namespace.preset or (f"tiny-{family}" if family in DEMO_FAMILIES else family)
            recipe = recipe_of(preset, namespace.model_path)
        fields = {f.name: f for cls in SETTINGS for f in knobs.knobs(cls)}
        for action in parser._actions:
            f = fields.get(action.dest)
            if f is not None and action.help and "{default}" in action.help:
                action.help = action.help.replace(
                    "{default}", default_text(f.name, f.default, family, method, recipe)
                )
        if recipe:
            parser.epilog = f"Defaults shown: the {recipe} recipe for {family} {method}.\n\n" + (
                parser.epilog or ""
            )
        parser.print_help()
        parser.exit()


def validate(args: argparse.Namespace) -> tuple[str, Paradigm]:
    """Check family, method, preset and paradigm before anything is written; return (preset, paradigm)."""
    from medtune.core_models import default_preset, get_preset
    from medtune.tuning.methods import get_method

    if args.family not in FAMILY_GROUPS:
        raise UsageError(f"unknown family {args.family!r}; choose one of: {', '.join(FAMILY_GROUPS)}")
    get_method(args.method)
    paradigm = Paradigm.parse(args.paradigm, args.family)
    try:
        preset = get_preset(args.preset) if args.preset else default_preset(args.family, args.model_path)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if preset.family != args.family:
        raise UsageError(
            f"preset {preset.name!r} is a {preset.family} model, not {args.family}; "
            f"choose a {args.family} preset"
        )
    return preset.name, paradigm


def command_settings(args: argparse.Namespace) -> dict:
    """Return the settings the command line gives: the config file, then flags, then --set (later wins)."""
    settings = read_config(args.config) if args.config is not None else {}
    file_preset, file_paradigm = settings.pop("preset", None), settings.pop("paradigm", None)
    args.preset = args.preset or file_preset  # the flags win over the file
    args.paradigm = args.paradigm or file_paradigm
    for cls in SETTINGS:
        settings.update(knobs.given(args, cls))
    for text in args.assignments:
        key, value = knobs.parse_assignment(text, SETTINGS)
        settings[key] = value
    return settings


def run(args: argparse.Namespace) -> int:
    overrides = command_settings(args)
    preset, paradigm = validate(args)
    if args.accelerate_config is not None and accelerate_distributed_type(args.accelerate_config) == "FSDP":
        # medtune shards the model itself (FSDP2 per decoder layer, tested); accelerate's own wrapping
        # of a prepared model is not used, so the shipped FSDP config means --fsdp.
        overrides["fsdp"] = True
        say(f"{args.accelerate_config.name} asks for FSDP: medtune shards the model itself, as with --fsdp")
    cfg = resolve_config(args.family, args.method, preset, str(paradigm), overrides)
    say(
        f"medtune train {cfg.family} {cfg.method} | preset {cfg.preset} | paradigm {cfg.paradigm} | recipe {cfg.recipe}"
    )
    say(
        f"  lr {cfg.lr:g}, {cfg.scheduler} schedule, warm-up {cfg.warmup_ratio:g}, weight decay {cfg.weight_decay:g}, "
        f"batch {cfg.batch_size} x {cfg.grad_accum}, {cfg.max_steps or cfg.epochs} {'steps' if cfg.max_steps else 'epochs'}, "
        f"seed {cfg.seed}"
    )
    if tuple(cfg.report_to) != check_trackers(cfg.report_to):
        say("  tensorboard is not installed: metrics.jsonl only (pip install 'medtune[tensorboard]')")
    if args.resume is not None and not args.resume.is_dir():
        raise UsageError(
            f"--resume {args.resume} does not exist; pass the run directory of the run to continue"
        )
    if cfg.fsdp and (args.num_processes or 1) < 2 and int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise UsageError("--fsdp shards the model over processes; add --num-processes 2 or more")
    if args.num_processes is not None and args.num_processes > 1:
        return launch_processes(args.num_processes, args.accelerate_config, fsdp=cfg.fsdp)
    from medtune.eval import format_scores
    from medtune.tuning.train import train  # heavy imports only once the input is valid

    try:
        result = train(cfg, progress=not args.quiet, resume=args.resume)
    except FloatingPointError as err:  # a diverged loss: the sentence says what to lower
        print(f"medtune train: stopped: {err}", file=sys.stderr)
        return 1
    if not result.main_process:  # a distributed run's other processes: the main one says it, scores included
        return 0
    c = result.counts
    print("\n== summary ==")
    print(
        f"trainable parameters : {c['trainable_params']:,} of {c['total_params']:,} "
        f"({100 * c['trainable_ratio']:.4f}%)"
    )
    print(f"loss                 : {result.first_loss:.3f} -> {result.last_loss:.3f}")
    if result.before is not None:
        print(f"scores before        : {format_scores(result.before, args.scorer)}")
    if result.after is not None:
        print(f"scores after         : {format_scores(result.after, args.scorer)}")
    print(f"time                 : {result.seconds:.0f} s")
    if result.memory is not None:
        m = result.memory
        # The process itself before loading, on the CPU: the plan counts tensors only.
        before = m.get("measured_before_load_bytes") or 0
        of_it = f"; {before / 2**30:.2f} GiB of it before loading" if before else ""
        print(
            f"memory peak          : {m['measured_peak_bytes'] / 2**30:.2f} GiB measured ({m['measured_by']}"
            f"{of_it}), {m['planned_peak_bytes'] / 2**30:.2f} GiB planned"
        )
    print(f"run directory        : {result.run_dir}")
    return 0


def say(line: str) -> None:
    """Print ``line`` from the command's first process only (not again from each one --num-processes launches)."""
    if "MEDTUNE_LAUNCHED_PROCESSES" not in os.environ and os.environ.get("RANK", "0") == "0":
        print(line)


def accelerate_distributed_type(config_file: Path) -> str:
    """Return the `distributed_type` an accelerate config file asks for ("NO" when it names none)."""
    import yaml

    if not config_file.is_file():
        raise UsageError(
            f"--accelerate-config {config_file} does not exist; pass an accelerate config file (the shipped "
            "ones are in medtune/tuning/accelerate_configs/)"
        )
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"--accelerate-config {config_file} is not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise UsageError(f"--accelerate-config {config_file} holds no mapping of accelerate settings")
    return str(config.get("distributed_type", "NO")).upper()


def launch_processes(n: int, config_file: Path | None, *, fsdp: bool = False) -> int:
    """Re-run this very command under `accelerate launch` with ``n`` processes; return its exit code.

    The children learn ``n`` (MEDTUNE_LAUNCHED_PROCESSES) and refuse to train unless they form one group of
    that size, so a launcher that starts ``n`` independent runs cannot go unnoticed.
    """
    import subprocess

    argv = sys.argv[1:]
    if fsdp and "--fsdp" not in argv:
        argv.append("--fsdp")
    for flag in ("--num-processes", "--accelerate-config"):  # the children must not launch again
        while flag in argv:
            i = argv.index(flag)
            del argv[i : i + 2]
        argv = [a for a in argv if not a.startswith(flag + "=")]
    if config_file is None and _cuda_count() < n:
        # accelerate launch has no CPU multi-process flag; torchrun's environment makes Accelerator use gloo.
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n)]
    else:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n)]
        launch += ["--config_file", str(config_file)] if config_file is not None else ["--multi_gpu"]
    env = {**os.environ, "MEDTUNE_LAUNCHED_PROCESSES": str(n)}
    if launch[2] == "torch.distributed.run":
        env["ACCELERATE_USE_CPU"] = "true"
    return subprocess.call([*launch, "-m", "medtune.tuning.cli", *argv], env=env)


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count()
