"""Plot one method-benchmark run: p50 step time (p20-p80 bars) and the peak memory split per method.

python benchmarks/methods/plot_methods.py [results.csv] [out.png]   # the CSV's latest run
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")  # files only; no display on benchmark machines
import matplotlib.pyplot as plt

MIB = 1024**2
PARTS = (
    ("weights_bytes", "weights"),
    ("grads_bytes", "gradients"),
    ("optimizer_bytes", "optimizer state"),
    ("activations_bytes", "activations"),
)


def plot(rows, path: Path) -> Path:
    """Write the two-panel figure for ``rows`` (one run) to ``path`` and return it."""
    methods = [r.method for r in rows]
    x = range(len(rows))
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    p50 = [r.p50_ms for r in rows]
    err = [[r.p50_ms - r.p20_ms for r in rows], [r.p80_ms - r.p50_ms for r in rows]]
    ax_t.bar(x, p50, yerr=err, capsize=4, color="#4c72b0")
    ax_t.set_xticks(list(x), methods)
    ax_t.set_ylabel("step time, ms (p50; bars p20-p80)")
    ax_t.set_title("forward + backward + AdamW step")
    bottom = [0.0] * len(rows)
    for key, label in PARTS:
        part = [float(getattr(r, key)) / MIB for r in rows]
        ax_m.bar(x, part, bottom=bottom, label=label)
        bottom = [b + p for b, p in zip(bottom, part)]
    ax_m.set_xticks(list(x), methods)
    ax_m.set_ylabel("MiB")
    ax_m.set_title("peak memory of a step")
    ax_m.legend(fontsize=8)
    r0 = rows[0]
    fig.suptitle(
        f"{r0.preset} {r0.paradigm} {r0.dtype}, batch {r0.batch} x {r0.seq_len}, {r0.device}", fontsize=10
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latest_run(csv_path: Path, run_id: str | None = None) -> list[SimpleNamespace]:
    """Return the rows of run ``run_id`` (default: the CSV's most recent run), numbers parsed."""
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{csv_path} has no rows; run bench_methods.py first")
    last = run_id or rows[-1]["run_id"]
    out = []
    for r in rows:
        if r["run_id"] != last:
            continue
        parsed = {k: _number(v) for k, v in r.items()}
        out.append(SimpleNamespace(**parsed))
    if not out:
        raise SystemExit(f"{csv_path} has no run {last!r}; its run_id column names the runs")
    return out


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "results.csv"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_suffix(".png")
    print(plot(latest_run(src, sys.argv[3] if len(sys.argv) > 3 else None), dst))
