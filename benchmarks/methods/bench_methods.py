"""End-to-end method benchmark: step time, memory and adapter size of every tuning method on one model.

Every method trains a copy of the same randomly initialised model on the same synthetic batch of the real
shapes (image tokens + text, labels masked except the answer). Methods are timed round-robin, a few steps
each per round, so machine noise spreads over all of them; compare ratios within one run, never absolute
times across runs. Rows append to ``DIR/results.csv``; ``DIR/results.png`` plots the latest run.

    python benchmarks/methods/bench_methods.py                       # bench-llava, F,F,PEFT,F, CPU
    python benchmarks/methods/bench_methods.py --preset tiny-llava --rounds 1 --steps 1 --warmup 0
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import transformers

from medtune.core_models import build_random, get_preset, image_token_count
from medtune.tuning.adapter import save_adapter
from medtune.tuning.apply import Tuned, apply_paradigm
from medtune.tuning.methods import METHODS, MethodOptions
from medtune.tuning.paradigm import Paradigm
from medtune.tuning.train import training_step

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from report import print_report  # noqa: E402  (sibling script, not a package)
from results_log import append_rows, check_appendable  # noqa: E402

METHOD_ORDER = ("full", "ln", "attention", "ffn", "lora", "prefix")
ANSWER_TOKENS = 16  # label positions that count toward the loss (a short answer after the prompt)


@dataclass
class Row:
    """One CSV row: a method's measurements in one run, with what was measured on."""

    run_id: str
    device: str
    torch: str
    transformers: str
    preset: str
    method: str
    paradigm: str
    dtype: str
    four_bit: bool
    batch: int
    seq_len: int
    threads: int
    steps: int
    p20_ms: float
    p50_ms: float
    p80_ms: float
    tokens_per_s: float
    weights_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    peak_bytes: int
    memory_source: str
    total_params: int
    trainable_params: int
    adapter_bytes: int


COLUMNS = [f.name for f in fields(Row)]


def synthetic_batch(config, batch: int, text_tokens: int, image_size: int, seed: int = 0) -> dict:
    """Return a LLaVA training batch: input_ids/labels (batch, seq), pixel_values (batch, 3, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    n_image = image_token_count(config)
    seq = 1 + n_image + text_tokens
    vocab = config.text_config.vocab_size
    image_id = config.image_token_index
    ids = torch.randint(5, vocab, (batch, seq), generator=gen)
    ids[ids == image_id] = 5  # the image token may appear only where the image goes
    ids[:, 0] = config.text_config.bos_token_id
    ids[:, 1 : 1 + n_image] = image_id
    labels = torch.full_like(ids, -100)
    labels[:, -ANSWER_TOKENS:] = ids[:, -ANSWER_TOKENS:]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "pixel_values": torch.randn(batch, 3, image_size, image_size, generator=gen),
    }


@dataclass
class Contender:
    """A method ready to step: its tuned model copy and optimizer."""

    method: str
    tuned: Tuned
    optimizer: torch.optim.Optimizer
    times: list[float]


def prepare(base, method: str, paradigm: Paradigm, four_bit: bool) -> Contender:
    """Return ``method`` applied to a deep copy of ``base`` with an AdamW over its trainable tensors."""
    tuned = apply_paradigm(copy.deepcopy(base), "llava", method, paradigm, MethodOptions())
    if four_bit:
        quantize_frozen(tuned)
    tuned.model.train()
    params = [p for p in tuned.model.parameters() if p.requires_grad]
    return Contender(method, tuned, torch.optim.AdamW(params, lr=1e-5), [])


def quantize_frozen(tuned: Tuned) -> None:
    """Make the tuned model's frozen linears NF4 (medtune.core_models.quantize), or raise why it cannot."""
    try:
        from medtune.core_models.quantize import quantize_frozen as to_nf4
    except ImportError as err:
        raise RuntimeError(f"4-bit weights are unavailable here ({err}); --4bit rows are skipped") from None
    report = to_nf4(tuned.model, tuned.trainable)
    if not report.quantized:
        raise RuntimeError(
            "no frozen linear layer to quantise, so its 4-bit row would equal the 16/32-bit one"
        )


def step(c: Contender, batch: dict, device: torch.device) -> None:
    """One training step: forward, backward, optimizer step (gradients freed first)."""
    c.optimizer.zero_grad(set_to_none=True)
    training_step(c.tuned.model, batch)
    c.optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def tensor_bytes(tensors) -> int:
    """Return the bytes of the distinct storages behind ``tensors`` (views and ties counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def quant_state_tensors(model) -> list[torch.Tensor]:
    """Return the block scales and codebooks of NF4 weights (bitsandbytes keeps them beside the packed codes)."""
    out = []
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        while state is not None:
            out += [v for v in vars(state).values() if torch.is_tensor(v)]
            state = getattr(state, "state2", None)
    return out


def measure_memory(c: Contender, batch: dict, device: torch.device) -> dict:
    """Return a step's memory split: weights, grads, optimizer state, activations and their peak, in bytes.

    Weights, gradients and optimizer state are summed exactly from their tensors. Activations are what autograd
    saves for the backward pass (a saved-tensors hook sums their storages, parameters excluded); on the CPU the
    peak is the sum of the four, since at the end of the forward pass of step 2+ all four are live at once
    (gradients are freed at zero_grad, so this is an upper bound by at most one set of gradients). On CUDA the
    peak is torch.cuda.max_memory_allocated and activations are what the other three leave of it.
    """
    model, opt = c.tuned.model, c.optimizer
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in param_ptrs and s.device.type != "meta":
            saved[s.data_ptr()] = s.nbytes()
        return t

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    opt.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    opt.step()
    weights = tensor_bytes([*model.parameters(), *model.buffers(), *quant_state_tensors(model)])
    grads = tensor_bytes(p.grad for p in model.parameters() if p.grad is not None)
    state = tensor_bytes(v for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    activations = sum(saved.values())
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        activations = max(0, peak - weights - grads - state)
        source = "cuda max_memory_allocated"
    else:
        peak = weights + grads + state + activations
        source = "tensor accounting + saved-tensor hooks"
    return {
        "weights_bytes": weights,
        "grads_bytes": grads,
        "optimizer_bytes": state,
        "activations_bytes": activations,
        "peak_bytes": peak,
        "memory_source": source,
    }


def adapter_bytes(c: Contender, preset: str, paradigm: Paradigm) -> int:
    """Return the on-disk size of the method's adapter (save_adapter of its trainable tensors)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_adapter(
            Path(tmp) / "adapter",
            c.tuned.model,
            c.tuned.trainable,
            {"preset": preset, "family": paradigm.family, "method": c.method, "paradigm": str(paradigm)},
        )
        return sum(f.stat().st_size for f in path.iterdir())


def quantile(values: list[float], q: float) -> float:
    """Return the ``q`` quantile of ``values`` (linear interpolation)."""
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), q))


def run(args: argparse.Namespace) -> list[Row]:
    """Benchmark every requested method round-robin and return one Row per method."""
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    preset = get_preset(args.preset)
    paradigm = Paradigm.parse(args.paradigm, "llava")
    dtype = getattr(torch, args.dtype)
    base = build_random(preset, device=device, dtype=dtype)
    config = base.config
    batch = synthetic_batch(config, args.batch, args.text_tokens, config.vision_config.image_size, args.seed)
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    seq_len = batch["input_ids"].shape[1]
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    )
    run_id = dt.datetime.now().strftime("%Y%m%d-%H%M%S")

    contenders = []
    for method in args.methods:
        try:
            contenders.append(prepare(base, method, paradigm, args.four_bit))
        except RuntimeError as err:
            print(f"skip {method}: {err}")
    del base
    memory, adapters = {}, {}
    for c in contenders:  # warm-up (allocator, lazy inits, optimizer state) then the memory step
        for _ in range(args.warmup):
            step(c, batch, device)
        memory[c.method] = measure_memory(c, batch, device)
        adapters[c.method] = adapter_bytes(c, preset.name, paradigm)
        if not args.quiet:
            print(f"warmed up {c.method}: peak {memory[c.method]['peak_bytes'] / 2**20:.1f} MiB", flush=True)
    for r in range(args.rounds):
        for c in (
            contenders if r % 2 == 0 else reversed(contenders)
        ):  # alternate order: no method always first
            for _ in range(args.steps):
                start = time.perf_counter()
                step(c, batch, device)
                c.times.append(time.perf_counter() - start)
        if not args.quiet:
            print(
                f"round {r + 1}/{args.rounds}: "
                + ", ".join(f"{c.method} {c.times[-1]:.2f}s" for c in contenders),
                flush=True,
            )

    rows = []
    for c in contenders:
        counts = c.tuned.counts()
        p50 = quantile(c.times, 0.5)
        rows.append(
            Row(
                run_id=run_id,
                device=device_name,
                torch=torch.__version__,
                transformers=transformers.__version__,
                preset=preset.name,
                method=c.method,
                paradigm=str(paradigm),
                dtype=args.dtype,
                four_bit=args.four_bit,
                batch=args.batch,
                seq_len=seq_len,
                threads=torch.get_num_threads(),
                steps=len(c.times),
                p20_ms=round(quantile(c.times, 0.2) * 1e3, 2),
                p50_ms=round(p50 * 1e3, 2),
                p80_ms=round(quantile(c.times, 0.8) * 1e3, 2),
                tokens_per_s=round(args.batch * seq_len / p50, 1),
                **memory[c.method],
                total_params=counts["total_params"],
                trainable_params=counts["trainable_params"],
                adapter_bytes=adapters[c.method],
            )
        )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Return the harness's parsed command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="bench-llava", help="a llava-family preset (default bench-llava)")
    p.add_argument("--paradigm", default="F,F,PEFT,F")
    p.add_argument("--methods", default=",".join(METHOD_ORDER), help="comma-separated, default all six")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--text-tokens", type=int, default=63, help="text tokens after the image tokens")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps per method before timing")
    p.add_argument("--rounds", type=int, default=6, help="round-robin rounds over the methods")
    p.add_argument("--steps", type=int, default=3, help="timed steps per method per round")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--4bit", dest="four_bit", action="store_true", help="4-bit frozen weights where supported"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared, oversubscribed CPU, OpenMP threads spin-waiting on each "
        "other make every small op erratic; 0 keeps torch's choice)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE, help="folder for results.csv and results.png")
    p.add_argument("--no-plot", dest="plot", action="store_false")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if min(args.batch, args.rounds, args.steps) < 1 or args.warmup < 0:
        p.error("--batch, --rounds and --steps must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, append the CSV, plot, print the table and the targets; return 0."""
    args = parse_args(argv)
    csv_path = args.out / "results.csv"
    check_appendable(csv_path, COLUMNS)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = run(args)
    finally:
        torch.set_num_threads(threads)  # a caller in the same process (tests, the CLI) keeps its setting
    if not rows:
        print("no method could run; nothing written")
        return 1
    append_rows(csv_path, map(asdict, rows), COLUMNS)
    print(f"appended {len(rows)} rows to {csv_path}")
    if args.plot:
        from plot_methods import plot  # matplotlib only when plotting

        print(f"plot: {plot(rows, args.out / 'results.png')}")
    print_report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
