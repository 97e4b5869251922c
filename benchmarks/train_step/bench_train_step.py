"""LN-tuning throughput through `medtune train` itself, on a 7B-shaped LLaVA-Med v1.5 checkpoint written to disk.

    python benchmarks/train_step/bench_train_step.py                  # GPU: bf16 under 24 GiB, NF4 under 8 GiB, old
    python benchmarks/train_step/bench_train_step.py --shape tiny     # any machine: the same path on tiny-llava

Writes a random-weight checkpoint (bf16 safetensors shards of ~2 GB with an index, the LLaVA-Med v1.5 config,
the demo's tokenizer and a CLIP image processor) into a scratch folder, then runs
`medtune train llava ln --preset llava-med-v1.5 --model-path DIR --max-steps N` in a fresh process per setting:

    bf16-24GB   --max-gpu-memory 24: the fast path chooses (16-bit weights, checkpointing, micro-batch)
    nf4-8GB     --max-gpu-memory 8 --4bit: the fast path chooses the rest
    old         --4bit --gradient-checkpointing --batch-size 1 --no-auto-fit (the settings measured before)
    bf16-compile  as bf16-24GB with --torch-compile (inductor; not in the default list: compiling takes minutes)

Each row: tokens/s (median of the logged steps after the warm-up ones, from the run's own metrics.jsonl),
useful-FLOP utilisation (LN-tuning's forward + input-gradient backward: 4 x parameters FLOP per token, against
--peak-tflops, 989 for an H200's dense bf16), the run's measured and planned peak memory (config.json) and what
the fast path chose. Appends to train_step.csv. Targets (one H200): bf16 >= 30% utilisation; NF4 under 8 GiB
>= 2x the old settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from checkpoint_shards import write_shards  # noqa: E402  (benchmarks/, scripts not a package)
from results_log import append_rows, check_appendable  # noqa: E402

COLUMNS = ["host", "gpu", "torch", "shape", "run", "command", "exit", "steps", "batch_size", "grad_accum",
           "load_4bit", "grad_checkpointing", "tokens_per_s", "useful_tflops", "utilisation",
           "measured_peak_bytes", "planned_peak_bytes", "seconds"]  # fmt: skip
RUNS = {
    "bf16-24GB": ["--max-gpu-memory", "24"],
    "nf4-8GB": ["--max-gpu-memory", "8", "--4bit"],
    "old": ["--4bit", "--gradient-checkpointing", "--batch-size", "1", "--no-auto-fit"],
    "bf16-compile": ["--max-gpu-memory", "24", "--torch-compile"],
}
SHAPES = {"7b": "llava-med-v1.5", "tiny": "tiny-llava"}  # the preset whose architecture is written
SHARD = 2 * 10**9


def write_checkpoint(folder: Path, preset: str) -> int:
    """Write a random bf16 checkpoint of ``preset``'s architecture, tensor by tensor; return its parameter count."""
    import torch
    from transformers import CLIPImageProcessor

    from medtune.core_models import get_preset
    from medtune.core_models.model_class import build_model

    folder.mkdir(parents=True)
    meta = build_model(preset, device="meta")  # shapes only: the 7B model is never held whole
    meta.config.dtype = "bfloat16"
    meta.config.save_pretrained(folder)
    generator = torch.Generator().manual_seed(0)
    shards, shard, size, params = [], {}, 0, 0
    for name, p in meta.state_dict().items():
        if name.endswith("norm.weight") or "layer_norm" in name or "layrnorm" in name:
            t = torch.ones(p.shape) if name.endswith("weight") else torch.zeros(p.shape)
        elif p.ndim < 2:
            t = torch.zeros(p.shape)
        else:  # small random weights: finite losses, as a real checkpoint gives
            t = torch.randn(p.shape, generator=generator) * 0.02
        shard[name] = t.to(torch.bfloat16).contiguous()
        size, params = size + 2 * p.numel(), params + p.numel()
        if size >= SHARD:
            shards.append(shard)
            shard, size = {}, 0
    shards += [shard] if shard else []
    write_shards(folder, shards)
    side = meta.config.vision_config.image_size
    CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    ).save_pretrained(folder)
    demo = get_preset("tiny-llava").default_weights
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the demo's word tokenizer: <image> is id 4
        shutil.copy(demo / name, folder / name)
    return params


def measure(run: str, preset: str, folder: Path, out: Path, steps: int, peak_tflops: float) -> dict:
    """Run `medtune train` for ``run`` in a fresh process; return its CSV row."""
    args = ["train", "llava", "ln", "--preset", preset, "--model-path", str(folder), "--max-steps", str(steps),
            "--no-eval-before", "--no-eval", "--quiet", "--logging-steps", "1", *RUNS[run],
            "--output-dir", str(out / run)]  # fmt: skip
    medtune = str(Path(sys.executable).with_name("medtune"))
    start = time.perf_counter()
    done = subprocess.run([medtune, *args], capture_output=True, text=True, env={**os.environ})
    seconds = time.perf_counter() - start
    print(done.stdout[-2500:], file=sys.stdout)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
    row = {"run": run, "command": "medtune " + " ".join(args[:-2]), "exit": done.returncode,
           "seconds": round(seconds, 1), "steps": steps}  # fmt: skip
    runs = sorted((out / run).glob("*/config.json"))
    if not runs:
        return row
    config = json.loads(runs[-1].read_text())
    logged = [json.loads(line) for line in (runs[-1].parent / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in logged if "tokens_per_s" in r]
    steady = (
        rates[2:] or rates[1:] or rates
    )  # the first steps pay for warm-up (allocator, autotuning, compile)
    tokens_per_s = statistics.median(steady) if steady else None
    params = config["params"]["total"]
    useful = 4 * params * tokens_per_s / 1e12 if tokens_per_s else None
    memory = config.get("memory", {})
    row |= {k: config.get(k) for k in ("batch_size", "grad_accum", "load_4bit", "grad_checkpointing")}
    row |= {
        "tokens_per_s": round(tokens_per_s, 1) if tokens_per_s else None,
        "useful_tflops": round(useful, 2) if useful else None,
        "utilisation": round(useful / peak_tflops, 4) if useful else None,
        "measured_peak_bytes": memory.get("measured_peak_bytes"),
        "planned_peak_bytes": memory.get("planned_peak_bytes"),
    }
    return row


def main(argv: list[str] | None = None) -> int:
    """Write the checkpoint, run each setting, append the rows to the CSV, print them; 0 when every run worked."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    p.add_argument("--runs", default="bf16-24GB,nf4-8GB,old", help=f"comma-separated, of {', '.join(RUNS)}")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the first two are warm-up)")
    p.add_argument(
        "--peak-tflops", type=float, default=989.0, help="the device's dense bf16 peak (H200: 989)"
    )
    p.add_argument(
        "--scratch", type=Path, default=Path(tempfile.gettempdir()), help="where the checkpoint goes"
    )
    p.add_argument("--out", type=Path, default=HERE / "train_step.csv")
    args = p.parse_args(argv)
    runs = args.runs.split(",")
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        p.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    check_appendable(args.out, COLUMNS)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    scratch = Path(tempfile.mkdtemp(prefix="medtune-bench-train-step-", dir=args.scratch))
    preset = SHAPES[args.shape]
    rows = []
    try:
        start = time.perf_counter()
        params = write_checkpoint(scratch / "checkpoint", preset)
        print(f"{params:,} parameters written as bf16 in {time.perf_counter() - start:.0f} s", flush=True)
        for run in runs:
            row = measure(run, preset, scratch / "checkpoint", scratch / "runs", args.steps, args.peak_tflops)
            row |= {"host": platform.node(), "gpu": gpu, "torch": torch.__version__, "shape": args.shape}
            rows.append(row)
            append_rows(
                args.out, [row], COLUMNS
            )  # row by row: a stage cut by its time limit keeps what it got
            print(f"{run:>13}: {row.get('tokens_per_s')} tokens/s, utilisation {row.get('utilisation')}, "
                  f"peak {(row.get('measured_peak_bytes') or 0) / 2**30:.1f} GiB, micro-batch "
                  f"{row.get('batch_size')} x {row.get('grad_accum')}, 4-bit {row.get('load_4bit')}, "
                  f"checkpointing {row.get('grad_checkpointing')}, exit {row['exit']}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if rows and all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
