"""GPU micro-benchmark of medtune's fused LayerNorm/RMSNorm against torch eager, torch.compile and Liger.

    python benchmarks/kernels/bench_norms.py [--quick] [--hidden H..] [--rows R..] [--dtype D..] [--op OP..]
                                             [--out DIR] [--peak-gbps N] [--sweep] [--report]

Appends one CSV row per measurement and clock to DIR/norms.csv and redraws DIR/norms.png from it. Two clocks:
`wall` (triton's do_bench: one call at a time, Python and launch cost included, what a lone call costs) and
`gpu` (the calls queued behind a device sleep so the GPU runs them back to back: kernel time alone, what a
norm costs inside a model whose CPU runs ahead of its GPU). `--sweep` times medtune's launch settings
instead and writes DIR/sweep.csv.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import itertools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_log import append_rows, check_appendable  # benchmarks/results_log.py: scripts, not a package

# Peak HBM bandwidth in GB/s by a substring of torch.cuda.get_device_name(); first match wins.
PEAK_GBPS = {
    "H200": 4800.0,
    "H100 PCIe": 2000.0,
    "H100": 3350.0,  # SXM
    "A100-SXM4-80GB": 2039.0,
    "A100": 1555.0,
    "L40S": 864.0,
    "L4": 300.0,
    "RTX 4090": 1008.0,
    "RTX 3090": 936.0,
}
OPS = ("layer_norm", "rms_norm")
MODES = ("forward", "backward", "full")
HIDDEN = (768, 1024, 4096, 5120, 8192)  # CLIP-B/BERT, CLIP-L, LLaMA/Mistral-7B, 13B, 70B-class
ROWS = (4096, 16384, 32768)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
CLOCKS = ("gpu", "wall")


@dataclass
class Row:
    """One measurement, as written to the CSV."""

    device: str
    torch_version: str
    triton_version: str
    op: str
    mode: str
    rows: int
    hidden: int
    dtype: str
    provider: str
    clock: str
    p20_ms: float
    p50_ms: float
    p80_ms: float
    gbps: float
    frac_peak: float


ROW_COLUMNS = [fl.name for fl in fields(Row)]


def peak_gbps(device_name: str, override: float | None = None) -> float | None:
    """Return the peak memory bandwidth in GB/s for `device_name`, `override` if given, None if unknown."""
    if override is not None:
        return override
    for key, value in PEAK_GBPS.items():
        if key in device_name:
            return value
    return None


def bytes_moved(mode: str, rows: int, hidden: int, elem_bytes: int) -> int:
    """Return the minimum bytes a norm must move: x read + y written forward; x, dy read + dx written backward."""
    per_pass = {"forward": 2, "backward": 3, "full": 5}[mode]
    # Per-row statistics and the [hidden] parameters are < 0.1% at these shapes; ignored on purpose.
    return per_pass * rows * hidden * elem_bytes


def measurement(
    meta: dict[str, str], op: str, mode: str, rows: int, hidden: int, dtype: str, provider: str, clock: str,
    quantiles_ms: tuple[float, float, float], peak: float | None,
) -> Row:  # fmt: skip
    """Return the CSV row for one timing: GB/s from the median time and its fraction of `peak` (0 if unknown)."""
    p20, p50, p80 = quantiles_ms
    gbps = bytes_moved(mode, rows, hidden, DTYPES[dtype].itemsize) / (p50 * 1e-3) / 1e9
    return Row(**meta, op=op, mode=mode, rows=rows, hidden=hidden, dtype=dtype, provider=provider, clock=clock,
               p20_ms=p20, p50_ms=p50, p80_ms=p80, gbps=gbps, frac_peak=gbps / peak if peak else 0.0)  # fmt: skip


def read_rows(path: Path) -> list[dict[str, str]]:
    """Return the CSV rows at `path` as dicts of strings."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def plot(rows: list[dict[str, str]], path: Path) -> None:
    """Write a PNG: GB/s against hidden size per provider, one panel per (op, mode, dtype), at the most rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clock = "gpu" if any(r.get("clock") == "gpu" for r in rows) else "wall"
    rows = [r for r in rows if r.get("clock", "wall") == clock]
    panels = sorted({(r["op"], r["mode"], r["dtype"]) for r in rows})
    cols = 3
    nrows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, (op, mode, dtype) in zip(axes.flat, panels):
        sel = [r for r in rows if (r["op"], r["mode"], r["dtype"]) == (op, mode, dtype)]
        most = max(int(r["rows"]) for r in sel)
        for provider in sorted({r["provider"] for r in sel}):
            pts = sorted(
                (int(r["hidden"]), float(r["gbps"]))
                for r in sel
                if r["provider"] == provider and int(r["rows"]) == most
            )
            ax.plot([h for h, _ in pts], [g for _, g in pts], marker="o", label=provider)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{op} {mode} {dtype}, {most} rows")
        ax.set_xlabel("hidden")
        ax.set_ylabel("GB/s")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    device = rows[0]["device"] if rows else "?"
    fig.suptitle(
        f"norm kernels on {device} ({'GPU time, launches hidden' if clock == 'gpu' else 'wall time'})"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Issue 3's targets on an H100: fraction of peak bandwidth per mode, and speed-ups at hidden 4096.
TARGET_FRAC = {"forward": 0.85, "backward": 0.70}
TARGET_VS_EAGER_4096 = 1.5


def verdicts(rows: list[dict[str, str]]) -> list[str]:
    """Return one line per target check over the CSV `rows` (this run's), at the most rows per shape.

    medtune's forward and backward fraction of peak (on the `gpu` clock: kernel efficiency), and on each
    clock its forward+backward speed-up over torch eager at hidden 4096 and whether it beats Liger at
    every hidden size Liger was measured at. Rows without a clock column (older CSVs) count as `wall`.
    """
    if not rows:
        return []
    most = max(int(r["rows"]) for r in rows)
    at = {
        (r.get("clock", "wall"), r["op"], r["mode"], int(r["hidden"]), r["dtype"], r["provider"]): r
        for r in rows
        if int(r["rows"]) == most
    }
    frac_clock = "gpu" if any(k[0] == "gpu" for k in at) else "wall"
    lines = []
    for (clock, op, mode, hidden, dtype, provider), r in sorted(at.items()):
        f = float(r["frac_peak"])
        if clock == frac_clock and provider == "medtune" and mode in TARGET_FRAC and f > 0:
            ok = "met" if f >= TARGET_FRAC[mode] else "MISSED"
            lines.append(
                f"{op} {mode} {dtype} {most}x{hidden}: {f:.1%} of peak ({clock} clock) vs "
                f"{TARGET_FRAC[mode]:.0%} {ok}"
            )
    for (clock, op, mode, hidden, dtype, provider), r in sorted(at.items()):
        if provider != "medtune" or mode != "full":
            continue
        ms = float(r["p50_ms"])
        eager = at.get((clock, op, mode, hidden, dtype, "torch"))
        if hidden == 4096 and eager:
            x = float(eager["p50_ms"]) / ms
            ok = "met" if x >= TARGET_VS_EAGER_4096 else "MISSED"
            lines.append(
                f"{op} full {dtype} {most}x4096 ({clock}): {x:.2f}x torch eager vs {TARGET_VS_EAGER_4096}x {ok}"
            )
        liger = at.get((clock, op, mode, hidden, dtype, "liger"))
        if liger:
            x = float(liger["p50_ms"]) / ms
            ok = "met" if x > 1 else "MISSED"
            lines.append(f"{op} full {dtype} {most}x{hidden} ({clock}): {x:.2f}x Liger vs > 1x {ok}")
    return lines


def _torch_rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    # What transformers' LlamaRMSNorm runs in eager mode: the baseline a user would otherwise get.
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def providers(op: str) -> dict[str, Callable]:
    """Return provider name -> fn(x, weight, bias) for `op`; Liger only when it is installed."""
    from medtune.kernels import layer_norm, rms_norm

    if op == "layer_norm":
        eager = lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)  # noqa: E731
        found = {"medtune": lambda x, w, b: layer_norm(x, w, b, 1e-5), "torch": eager}
    else:
        eager = lambda x, w, b: _torch_rms(x, w, 1e-6)  # noqa: E731
        found = {"medtune": lambda x, w, b: rms_norm(x, w, 1e-6), "torch": eager}
    found["torch_compile"] = torch.compile(eager, dynamic=False)
    if importlib.util.find_spec("liger_kernel") is not None:
        if op == "layer_norm":
            from liger_kernel.ops.layer_norm import LigerLayerNormFunction

            found["liger"] = lambda x, w, b: LigerLayerNormFunction.apply(x, w, b, 1e-5)
        else:
            from liger_kernel.ops.rms_norm import LigerRMSNormFunction

            found["liger"] = lambda x, w, b: LigerRMSNormFunction.apply(x, w, 1e-6)
    return found


def _workload(fn: Callable, mode: str, rows: int, hidden: int, dtype: torch.dtype) -> tuple[Callable, list]:
    """Return (call, tensors whose .grad each call must find cleared) timing `mode` of fn on [rows, hidden]."""
    x = torch.randn(rows, hidden, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(hidden, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(hidden, device="cuda", dtype=dtype, requires_grad=True)
    dy = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    if mode == "forward":

        def forward() -> None:
            with torch.no_grad():
                fn(x, w, b)

        return forward, []
    if mode == "backward":
        y = fn(x, w, b)
        return (lambda: y.backward(dy, retain_graph=True)), [x, w, b]
    return (lambda: fn(x, w, b).backward(dy)), [x, w, b]


_FLUSH: list[torch.Tensor] = []


def _flush_l2() -> None:
    """Overwrite a buffer larger than any GPU's L2 so no call finds its inputs cached by the previous one."""
    if not _FLUSH:
        _FLUSH.append(torch.empty(64 * 2**20, dtype=torch.int32, device="cuda"))  # 256 MB
    _FLUSH[0].zero_()


def queued_quantiles(call: Callable, grads: list, reps: int = 30) -> tuple[float, float, float] | None:
    """Return p20/p50/p80 GPU milliseconds of `call`, its launch cost hidden, or None if it syncs the host.

    Every call (with an L2 flush between) is queued while the GPU sleeps; if the sleep outlasts the queueing,
    the GPU then runs the calls back to back and the events around each time its kernels alone, as in a model
    whose CPU runs ahead. A call that waits for the GPU (a .item(), say) cannot be queued: None.
    """
    for _ in range(3):  # compile, fill the allocator's cache
        call()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    cycles = 20_000_000  # about 10 ms at H100/H200 clocks; grown until the queueing fits
    for _ in range(5):
        torch.cuda._sleep(cycles)
        awake = torch.cuda.Event()
        awake.record()
        for start, end in zip(starts, ends):
            for g in grads:
                g.grad = None
            _flush_l2()
            start.record()
            call()
            end.record()
        queued = not awake.query()
        torch.cuda.synchronize()
        if queued:
            times = torch.tensor([s.elapsed_time(e) for s, e in zip(starts, ends)])
            return tuple(torch.quantile(times, torch.tensor([0.2, 0.5, 0.8])).tolist())
        cycles *= 4
    return None


def time_one(fn: Callable, mode: str, rows: int, hidden: int, dtype: torch.dtype, rep_ms: int) -> dict:
    """Return {clock: (p20, p50, p80) ms} of `mode` for fn on a [rows, hidden] input with all grads on."""
    from triton.testing import do_bench

    call, grads = _workload(fn, mode, rows, hidden, dtype)
    out = {"wall": tuple(do_bench(call, quantiles=[0.2, 0.5, 0.8], grad_to_none=grads, rep=rep_ms))}
    gpu = queued_quantiles(call, grads)
    if gpu is not None:
        out["gpu"] = gpu
    return out


@dataclass
class SweepRow:
    """One timing of medtune's norm under one set of launch settings (GPU clock), as written to sweep.csv."""

    device: str
    triton_version: str
    op: str
    mode: str
    rows: int
    hidden: int
    dtype: str
    warps: int
    waves: int
    prefetch: bool
    default: bool
    p50_ms: float
    gbps: float
    frac_peak: float


@contextmanager
def launch_settings(mode: str, warps: int, waves: int, prefetch: bool = False) -> Iterator[None]:
    """Within the block, medtune's `mode` launches use these settings instead of config.py's choice."""
    from medtune.kernels._triton import config

    if mode == "forward":
        with mock.patch.object(config, "num_warps", lambda block: warps):
            yield
        return
    with (
        mock.patch.object(config, "backward_warps", lambda block: warps),
        mock.patch.object(config, "backward_waves", lambda block: waves),
        mock.patch.object(config, "backward_prefetch", lambda block: prefetch),
    ):
        yield


def candidate_settings(mode: str, block: int) -> list[tuple[int, int, bool]]:
    """Return the (warps, programs per SM, prefetch) to try for `mode` at a row block of `block`, the default
    first. The forward launches one program per row and prefetches nothing: (warps, 0, False)."""
    from medtune.kernels._triton import config

    if mode == "forward":
        default = (config.num_warps(block), 0, False)
        return [default, *((w, 0, False) for w in (2, 4, 8, 16, 32) if 32 * w <= block and w != default[0])]
    default = (config.backward_warps(block), config.backward_waves(block), config.backward_prefetch(block))
    warps = [w for w in (2, 4, 8, 16, 32) if 32 * w <= block and default[0] // 2 <= w <= default[0] * 2]
    grid = itertools.product(warps, (1, 2, 4, 8, 16), (False, True))
    return [default, *(c for c in grid if c != default)]


def sweep(args, meta: dict[str, str], peak: float | None) -> int:
    """Time medtune's forward and backward under each candidate launch setting; write OUT/sweep.csv."""
    from medtune.kernels import layer_norm, rms_norm
    from medtune.kernels._triton.config import block_size

    fns = {
        "layer_norm": lambda x, w, b: layer_norm(x, w, b, 1e-5),
        "rms_norm": lambda x, w, b: rms_norm(x, w, 1e-6),
    }
    path = args.out / "sweep.csv"
    columns = [fl.name for fl in fields(SweepRow)]
    check_appendable(path, columns)
    for op, dtype, hidden, rows, mode in itertools.product(
        args.op or OPS,
        args.dtype or ("bf16",),
        args.hidden or HIDDEN,
        (args.rows or (16384,))[:1],
        ("backward", "forward"),
    ):
        results = []
        for warps, waves, prefetch in candidate_settings(mode, block_size(hidden)):
            with launch_settings(mode, warps, waves, prefetch):
                q = queued_quantiles(*_workload(fns[op], mode, rows, hidden, DTYPES[dtype]))
            if q is None:
                continue
            gbps = bytes_moved(mode, rows, hidden, DTYPES[dtype].itemsize) / (q[1] * 1e-3) / 1e9
            results.append(SweepRow(
                meta["device"], meta["triton_version"], op, mode, rows, hidden, dtype, warps, waves, prefetch,
                not results, q[1], gbps, gbps / peak if peak else 0.0,
            ))  # fmt: skip
        append_rows(path, map(asdict, results), columns)
        best = min(results, key=lambda r: r.p50_ms)
        print(f"{op:10s} {mode:8s} {rows}x{hidden:<5d} {dtype}: default {results[0].p50_ms:.4f} ms "
              f"({results[0].frac_peak:.1%}); best warps={best.warps} waves={best.waves} prefetch={best.prefetch} "
              f"{best.p50_ms:.4f} ms ({best.frac_peak:.1%})")  # fmt: skip
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark grid and return the exit status (2 when there is no CUDA device)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two hidden sizes, 4096 rows, bf16 only")
    parser.add_argument("--hidden", type=int, nargs="+", help=f"hidden sizes (default {list(HIDDEN)})")
    parser.add_argument("--rows", type=int, nargs="+", help=f"row counts (default {list(ROWS)})")
    parser.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), help="default: bf16 fp32")
    parser.add_argument("--op", nargs="+", choices=OPS, help="default: both")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/kernels/results"))
    parser.add_argument("--peak-gbps", type=float, default=None, help="peak memory bandwidth, GB/s")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="time medtune alone under each candidate launch setting (warps, programs per SM, prefetch), GPU clock",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="measure nothing: print the verdicts and redraw the plot from OUT/norms.csv (any machine)",
    )
    args = parser.parse_args(argv)
    if args.report:
        return report(args.out)
    if not torch.cuda.is_available():
        print(
            "bench_norms.py needs a CUDA GPU and none is visible to torch "
            f"(torch {torch.__version__}); run it on a machine with one. Without a GPU, "
            "`python -m medtune.kernels.resources` compiles every kernel for sm_90 and reports spills.",
            file=sys.stderr,
        )
        return 2
    import triton

    # One compiled graph per shape and dtype: lift dynamo's recompile limit so none falls back to eager.
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 1024)
    device = torch.cuda.get_device_name()
    peak = peak_gbps(device, args.peak_gbps)
    if peak is None:
        print(f"unknown peak bandwidth for {device!r}; pass --peak-gbps to get frac_peak", file=sys.stderr)
    meta = {"device": device, "torch_version": torch.__version__, "triton_version": triton.__version__}
    if args.sweep:
        return sweep(args, meta, peak)
    hiddens, rows_list, dtypes = (
        ((768, 4096), (4096,), ("bf16",)) if args.quick else (HIDDEN, ROWS, tuple(DTYPES))
    )
    # Explicit choices narrow the grid (a GPU session with minutes to spare picks what fits).
    hiddens, rows_list, dtypes = args.hidden or hiddens, args.rows or rows_list, args.dtype or dtypes
    csv_path = args.out / "norms.csv"
    check_appendable(csv_path, ROW_COLUMNS)
    this_run: list[Row] = []
    for op in args.op or OPS:
        fns = providers(op)
        for dtype in dtypes:
            for hidden in hiddens:
                for rows in rows_list:
                    batch = []
                    for mode in MODES:
                        for provider, fn in fns.items():
                            clocks = time_one(
                                fn, mode, rows, hidden, DTYPES[dtype], 50 if args.quick else 200
                            )
                            shown = []
                            for clock, q in clocks.items():
                                r = measurement(meta, op, mode, rows, hidden, dtype, provider, clock, q, peak)
                                batch.append(r)
                                shown.append(
                                    f"{clock} p50 {r.p50_ms:8.4f} ms {r.gbps:7.1f} GB/s {r.frac_peak:5.1%}"
                                )
                            print(
                                f"{op:10s} {mode:8s} {rows:6d}x{hidden:<5d} {dtype} {provider:13s} "
                                + " | ".join(shown)
                            )
                    append_rows(csv_path, map(asdict, batch), ROW_COLUMNS)
                    this_run += batch
    plot(read_rows(csv_path), args.out / "norms.png")
    print_verdicts([{k: str(v) for k, v in asdict(r).items()} for r in this_run])
    print(f"wrote {csv_path} and {args.out / 'norms.png'}")
    return 0


def print_verdicts(rows: list[dict[str, str]]) -> None:
    """Print the target verdicts over `rows` under a heading."""
    print("targets:")
    for line in verdicts(rows):
        print(f"- {line}")


def report(out: Path) -> int:
    """Print the verdicts and redraw the plot from OUT/norms.csv, e.g. after a run cut short; return the status.

    The CSV may hold several runs (it is appended to): the newest device's rows are judged.
    """
    csv_path = out / "norms.csv"
    if not csv_path.is_file():
        print(f"no {csv_path} to report on; run the benchmark with --out {out} first", file=sys.stderr)
        return 2
    rows = read_rows(csv_path)
    newest = rows[-1]["device"] if rows else ""
    print_verdicts([r for r in rows if r["device"] == newest])
    plot(rows, out / "norms.png")
    print(f"read {len(rows)} rows from {csv_path}; redrew {out / 'norms.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
