"""The method benchmark's table (ratios vs full and vs lora) and the issue's targets, each with its margin."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024**2


@dataclass(frozen=True)
class Target:
    """One target of issue 8: what, the measured value, the bound, and whether it holds (None: not measured)."""

    what: str
    measured: float | None
    bound: float
    ok: bool | None

    def line(self) -> str:
        """Return the target as one sentence saying whether it is met and by how much."""
        if self.measured is None:
            return f"- {self.what} (bound {self.bound:g}): not measured in this run"
        verdict = "met" if self.ok else "MISSED"
        off = self.measured / self.bound if self.bound else float("inf")
        how = f"{'under' if self.ok else 'over'} the bound by {abs(off - 1) * 100:.1f}%"
        return f"- {self.what}: {self.measured:.4g} vs bound {self.bound:g}: {verdict}, {how}"


def _by_method(rows) -> dict:
    return {r.method: r for r in rows}


def targets(rows) -> list[Target]:
    """Return the CPU targets of issue 8 evaluated on ``rows`` (one run, one preset and paradigm)."""
    m = _by_method(rows)
    full, ln, lora = m.get("full"), m.get("ln"), m.get("lora")

    def ratio(a, b, key):
        return getattr(a, key) / getattr(b, key) if a and b and getattr(b, key) else None

    time_full = ratio(ln, full, "p50_ms")
    time_lora = ratio(ln, lora, "p50_ms")
    mem_full = ratio(ln, full, "peak_bytes")
    opt_full = ratio(ln, full, "optimizer_bytes")

    def target(what, value, bound):
        return Target(what, value, bound, None if value is None else value <= bound)

    return [
        target("ln step time / full (p50)", time_full, 0.65),
        target("ln step time / lora (p50)", time_lora, 1.0),
        target("ln peak memory / full", mem_full, 0.6),
        target("ln optimizer state / full (fraction)", opt_full, 0.001),
    ]


def markdown_table(rows) -> str:
    """Return the run as a Markdown table: p20/p50/p80, tokens/s, memory split, ratios vs full and lora."""
    m = _by_method(rows)
    full, lora = m.get("full"), m.get("lora")
    head = (
        "| method | trainable | p20 / p50 / p80 ms | tokens/s | time vs full | time vs lora | weights MiB "
        "| grads MiB | optim MiB | activ. MiB | peak MiB | peak vs full | adapter KiB |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        vs_full = f"{r.p50_ms / full.p50_ms:.2f}x" if full else "-"
        vs_lora = f"{r.p50_ms / lora.p50_ms:.2f}x" if lora else "-"
        mem_full = f"{r.peak_bytes / full.peak_bytes:.2f}x" if full else "-"
        lines.append(
            f"| {r.method} | {r.trainable_params:,} | {r.p20_ms:.0f} / {r.p50_ms:.0f} / {r.p80_ms:.0f} "
            f"| {r.tokens_per_s:,.0f} | {vs_full} | {vs_lora} | {r.weights_bytes / MIB:.1f} "
            f"| {r.grads_bytes / MIB:.2f} | {r.optimizer_bytes / MIB:.2f} | {r.activations_bytes / MIB:.1f} "
            f"| {r.peak_bytes / MIB:.1f} | {mem_full} | {r.adapter_bytes / 1024:,.0f} |"
        )
    return "\n".join(lines)


def print_report(rows) -> None:
    """Print the run's context, its table and the targets with their margins."""
    r0 = rows[0]
    print(
        f"\n{r0.preset}, paradigm {r0.paradigm}, {r0.dtype}{', 4-bit' if r0.four_bit else ''}, batch {r0.batch} "
        f"x {r0.seq_len} tokens, {r0.steps} timed steps per method, {r0.threads} threads, {r0.device}, "
        f"torch {r0.torch}, transformers {r0.transformers}; memory: {r0.memory_source}\n"
    )
    print(markdown_table(rows))
    print("\ntargets (issue 8, CPU bench-llava F,F,PEFT,F):")
    for t in targets(rows):
        print(t.line())
