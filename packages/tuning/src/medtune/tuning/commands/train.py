"""`medtune train FAMILY METHOD [flags]`: tune, evaluate and summarise (no flags: the built-in demo)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from medtune.core_models import FAMILY_GROUPS
from medtune.tuning.errors import UsageError
from medtune.tuning.methods import BUILTIN_METHODS
from medtune.tuning.paradigm import Paradigm
from medtune.tuning.recipes import resolve_config


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="tune a model with a method under a paradigm, then evaluate it",
        description="Tune FAMILY's model with METHOD. With no other flags: LN-tune the built-in demo.",
    )
    p.add_argument("family", help=f"model family: {', '.join(FAMILY_GROUPS)}")
    p.add_argument("method", help=f"tuning method: {', '.join(BUILTIN_METHODS)}")
    p.add_argument("--preset", help="architecture preset (default: the family's tiny demo model)")
    p.add_argument(
        "--paradigm", help="one state per group: T, F or PEFT (llava default F,F,PEFT,F; miss T,PEFT,T)"
    )
    p.add_argument("--model-path", help="local checkpoint folder (nothing is downloaded)")
    p.add_argument(
        "--dataset", help="local dataset folder or file in its published layout (default: demo data)"
    )
    p.add_argument("--config", type=Path, help="TOML file of settings (flags override it)")
    p.add_argument("--output-dir", help="where run directories go (default: runs)")
    for flag, kind in [
        ("lr", float),
        ("weight-decay", float),
        ("warmup-ratio", float),
        ("epochs", float),
        ("max-steps", int),
        ("batch-size", int),
        ("grad-accum", int),
        ("max-grad-norm", float),
        ("seed", int),
        ("log-every", int),
        ("save-every", int),
        ("eval-every", int),
        ("max-new-tokens", int),
        ("lora-rank", int),
        ("lora-alpha", float),
        ("lora-dropout", float),
        ("prefix-tokens", int),
    ]:
        p.add_argument(f"--{flag}", type=kind)
    p.add_argument("--scheduler", choices=["cosine", "linear", "constant"])
    p.add_argument("--task", choices=["vqa", "report"], help="default: found from the dataset's layout")
    p.add_argument(
        "--vision-tower", help="CLIP folder for a LLaVA-Med release whose vision tower is not inside it"
    )
    p.add_argument("--lora-targets", help="comma-separated module-name suffixes, e.g. q_proj,v_proj")
    p.add_argument(
        "--no-eval-before",
        dest="eval_before",
        action="store_false",
        default=None,
        help="skip scoring the untuned model first",
    )
    p.add_argument(
        "--no-eval",
        dest="eval_after",
        action="store_false",
        default=None,
        help="skip scoring the tuned model",
    )
    p.add_argument(
        "--grad-checkpointing",
        action="store_true",
        default=None,
        help="recompute activations in backward (less memory)",
    )
    p.add_argument(
        "--no-fused-norms",
        dest="fused_norms",
        action="store_false",
        default=None,
        help="keep torch's norms on GPU for ln (the fused Triton kernel is the default there)",
    )
    p.add_argument(
        "--4bit", dest="load_4bit", action="store_true", default=None, help="4-bit NF4 frozen weights"
    )
    p.add_argument(
        "--on-invalid",
        choices=["raise", "report"],
        help="a bad record stops the run (raise, default) or is skipped and listed in RUN_DIR/rejected.jsonl",
    )
    p.add_argument(
        "--fsdp",
        action="store_true",
        default=None,
        help="FSDP2 full shard over --num-processes, one unit per decoder layer (the paper's setting)",
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
    p.add_argument(
        "--scorer",
        choices=["medtune", "llava-med"],
        default="medtune",
        help="which VQA scorer leads the score summary (default medtune: whole-word closed, "
        "clipped recall; llava-med: LLaVA-Med's published scorer); scores.json always holds both",
    )
    return p


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


def run(args: argparse.Namespace) -> int:
    from medtune.tuning.datasets import format_scores
    from medtune.tuning.train import train  # heavy imports only once the input is valid

    preset, paradigm = validate(args)
    overrides = {
        k: getattr(args, k)
        for k in (
            "lr",
            "weight_decay",
            "warmup_ratio",
            "epochs",
            "max_steps",
            "batch_size",
            "grad_accum",
            "max_grad_norm",
            "seed",
            "log_every",
            "save_every",
            "eval_every",
            "eval_after",
            "grad_checkpointing",
            "fused_norms",
            "load_4bit",
            "fsdp",
            "on_invalid",
            "max_new_tokens",
            "lora_rank",
            "lora_alpha",
            "lora_dropout",
            "prefix_tokens",
            "scheduler",
            "eval_before",
            "model_path",
            "dataset",
            "output_dir",
            "task",
            "vision_tower",
        )
    }
    if args.lora_targets:
        overrides["lora_targets"] = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    if args.accelerate_config is not None and accelerate_distributed_type(args.accelerate_config) == "FSDP":
        # medtune shards the model itself (FSDP2 per decoder layer, tested); accelerate's own wrapping
        # of a prepared model is not used, so the shipped FSDP config means --fsdp.
        overrides["fsdp"] = True
        print(f"{args.accelerate_config.name} asks for FSDP: medtune shards the model itself, as with --fsdp")
    cfg = resolve_config(args.family, args.method, preset, str(paradigm), overrides, args.config)
    print(
        f"medtune train {cfg.family} {cfg.method} | preset {cfg.preset} | paradigm {cfg.paradigm} | recipe {cfg.recipe}"
    )
    print(
        f"  lr {cfg.lr:g}, {cfg.scheduler} schedule, warm-up {cfg.warmup_ratio:g}, weight decay {cfg.weight_decay:g}, "
        f"batch {cfg.batch_size} x {cfg.grad_accum}, {cfg.max_steps or cfg.epochs} {'steps' if cfg.max_steps else 'epochs'}, "
        f"seed {cfg.seed}"
    )
    if args.resume is not None and not args.resume.is_dir():
        raise UsageError(
            f"--resume {args.resume} does not exist; pass the run directory of the run to continue"
        )
    if cfg.fsdp and (args.num_processes or 1) < 2 and int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise UsageError("--fsdp shards the model over processes; add --num-processes 2 or more")
    if args.num_processes is not None and args.num_processes > 1:
        return launch_processes(args.num_processes, args.accelerate_config, fsdp=cfg.fsdp)
    try:
        result = train(cfg, progress=not args.quiet, resume=args.resume)
    except FloatingPointError as err:  # a diverged loss: the sentence says what to lower
        print(f"medtune train: stopped: {err}", file=sys.stderr)
        return 1
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
    print(f"run directory        : {result.run_dir}")
    return 0


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
