"""`medtune params FAMILY METHOD`: the paper's parameter accounting (and a memory plan) without loading weights."""

from __future__ import annotations

import argparse
import json

from medtune.core_models import FAMILY_GROUPS
from medtune.tuning import knobs
from medtune.tuning.errors import UsageError
from medtune.tuning.methods import BUILTIN_METHODS, MethodOptions
from medtune.tuning.recipes import TrainConfig

PLANNED = ("load_4bit", "batch_size", "grad_checkpointing")  # the train settings the memory plan reads


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Return the `params` sub-command's parser."""
    p = subparsers.add_parser(
        "params", help="count total/trainable/PEFT parameters (meta device, no weights)"
    )
    p.add_argument("family", choices=sorted(FAMILY_GROUPS))
    p.add_argument("method", choices=sorted(BUILTIN_METHODS))
    p.add_argument("--preset", help="architecture to count (default: the family's tiny demo model)")
    p.add_argument(
        "--paradigm", help="one state per group, T/F/PEFT, e.g. F,F,PEFT,F (default: the family's)"
    )
    p.add_argument("--memory", action="store_true", help="estimate peak training memory")
    p.add_argument("--seq-len", type=int, help="tokens per sample (default: image tokens + 128 for llava)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    # The settings `medtune train` has too, spelt as there (generated from the one table of settings).
    knobs.add_flags(p, MethodOptions, defaults={})
    knobs.add_flags(p, TrainConfig, PLANNED, defaults={"batch_size": 1})
    return p


def count(args: argparse.Namespace) -> dict:
    """Return the JSON-ready accounting (and memory plan) the arguments ask for."""
    from medtune.core_models import default_preset, get_preset
    from medtune.core_models.model_class import build_model
    from medtune.tuning.accounting import paper_counts
    from medtune.tuning.apply import apply_paradigm
    from medtune.tuning.memory import plan_memory
    from medtune.tuning.methods import get_method
    from medtune.tuning.paradigm import Paradigm

    try:
        preset = get_preset(args.preset) if args.preset else default_preset(args.family)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if preset.family != args.family:
        raise UsageError(
            f"preset {preset.name!r} is a {preset.family} model, not {args.family}; pass a {args.family} preset"
        )
    get_method(args.method)
    paradigm = Paradigm.parse(args.paradigm, args.family)
    options = MethodOptions(**knobs.given(args, MethodOptions))
    batch, four_bit, grad_checkpointing = (
        args.batch_size or 1,
        bool(args.load_4bit),
        bool(args.grad_checkpointing),
    )
    if batch < 1 or (args.seq_len is not None and args.seq_len < 1):
        raise UsageError("--per-device-train-batch-size and --seq-len must be positive integers")
    tuned = apply_paradigm(build_model(preset, device="meta"), args.family, args.method, paradigm, options)
    result = {"preset": preset.name, "family": args.family, "method": args.method, "paradigm": str(paradigm)}
    result |= paper_counts(tuned)
    if args.memory or four_bit:
        plan = plan_memory(
            tuned,
            batch=batch,
            seq_len=args.seq_len,
            four_bit=four_bit,
            grad_checkpointing=grad_checkpointing,
        )
        result["memory"] = plan.as_dict()
    return result


def percent(ratio: float) -> str:
    """Return ``ratio`` as a percentage with enough digits to show tiny ratios (0.00378%)."""
    return f"{100 * ratio:.2f}%" if ratio == 0 or ratio >= 1e-4 else f"{100 * ratio:.2g}%"


def table(result: dict) -> str:
    """Return the accounting as the paper's columns, one line per group, then the memory plan if any."""
    from medtune.tuning.memory import GIB

    lines = [
        f"{result['preset']} ({result['family']}), method {result['method']}, paradigm {result['paradigm']}",
        f"  total params      {result['total_params']:>16,}",
        f"  trainable params  {result['trainable_params']:>16,}  ({percent(result['trainable_ratio'])})",
        f"  PEFT params       {result['peft_params']:>16,}  ({percent(result['peft_ratio'])} of the PEFT groups)",
        f"  {'group':<14}{'state':>6}{'params':>17}{'trainable':>17}{'PEFT':>15}",
    ]
    for group, row in result["groups"].items():
        lines.append(
            f"  {group:<14}{row['state']:>6}{row['params']:>17,}{row['trainable']:>17,}{row['peft']:>15,}"
        )
    if "memory" in result:
        m = result["memory"]
        lines.append(
            f"  memory (batch {m['batch']}, {m['seq_len']} tokens, {'NF4' if m['four_bit'] else '16-bit'} frozen "
            f"weights{', grad checkpointing' if m['grad_checkpointing'] else ''}): "
            + ", ".join(
                f"{k} {m[k] / GIB:.2f} GiB" for k in ("weights", "gradients", "optimizer", "activations")
            )
        )
        fits = ", ".join(m["fits"]) or "none of 8/12/16/24 GB"
        lines.append(
            f"  peak about {m['peak'] / GIB:.2f} GiB (loading {m['load_peak'] / GIB:.2f} GiB, training step "
            f"{m['total'] / GIB:.2f} GiB); fits: {fits}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the accounting; return 0."""
    result = count(args)
    print(json.dumps(result) if args.json else table(result))
    return 0
