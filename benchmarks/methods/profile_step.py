"""Where a training step's time goes, per method: forward / backward / optimizer medians and a torch.profiler
op breakdown (matmul share, top ops), on the same model and batch as bench_methods.py.

    python benchmarks/methods/profile_step.py                     # full, ln, lora on bench-llava
    python benchmarks/methods/profile_step.py --methods ln,prefix --preset tiny-llava
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_methods import prepare, synthetic_batch

from medtune.core_models import build_random
from medtune.tuning.paradigm import Paradigm

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def phases(contender, batch) -> dict[str, float]:
    """Return the seconds of one step's forward, backward and optimizer step."""
    model, opt = contender.tuned.model, contender.optimizer
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss = model(**batch).loss
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    t3 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


def main(argv: list[str] | None = None) -> int:
    """Print per-method phase medians and op breakdowns; return 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="bench-llava")
    p.add_argument("--paradigm", default="F,F,PEFT,F")
    p.add_argument("--methods", default="full,ln,lora")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--text-tokens", type=int, default=63)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build_random(args.preset)
    batch = synthetic_batch(base.config, args.batch, args.text_tokens, base.config.vision_config.image_size)
    paradigm = Paradigm.parse(args.paradigm, "llava")
    contenders = {m: prepare(base, m, paradigm, False) for m in args.methods.split(",")}
    times: dict[str, list[dict]] = {m: [] for m in contenders}
    for r in range(args.rounds + 1):  # round 0 warms up
        for m, c in contenders.items():
            t = phases(c, batch)
            if r:
                times[m].append(t)
    for m, c in contenders.items():
        med = {k: statistics.median(t[k] for t in times[m]) for k in ("forward", "backward", "optimizer")}
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            phases(c, batch)
        ops = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in ops)
        mm = sum(e.self_cpu_time_total for e in ops if e.key in MATMULS)
        calls = sum(e.count for e in ops if e.key == "aten::mm")
        top = sorted(ops, key=lambda e: -e.self_cpu_time_total)[:6]
        print(
            f"{m}: forward {med['forward']:.3f} s, backward {med['backward']:.3f} s, optimizer "
            f"{med['optimizer']:.3f} s | matmul {mm / total:.0%} of {total / 1e6:.2f} s, {calls} mm calls"
        )
        print("    top: " + ", ".join(f"{e.key} {e.self_cpu_time_total / 1e3:.0f} ms" for e in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
