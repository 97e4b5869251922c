"""The fast path on a GPU: the fastest settings that fit the card, chosen from the memory planner; torch.compile.

On a CUDA device, `medtune train` asks the planner (on the meta device, no weights) what each candidate needs and
takes the first that fits the free memory, in order of speed: 16-bit frozen weights before NF4 (a 4-bit matmul
dequantises its weight on every call), no activation checkpointing before checkpointing (it recomputes the whole
forward in the backward), then the largest micro-batch that divides the recipe's batch, with gradient
accumulation making up the rest so the optimisation is the same. A setting the user gave (a flag or a config-file
key) is kept as given. On the CPU only activation checkpointing is chosen, and only when the step without it
would not fit the host memory this machine has available (checkpointing costs the CPU step about 10%).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medtune.tuning.memory import GIB, MemoryPlan, plan_memory

# (four_bit, grad_checkpointing, micro_batch) -> the planner's estimate for that setting
Planner = Callable[[bool, bool, int], MemoryPlan]
# The planner estimates tensors, not the allocator: its fragmentation and the kernels' workspaces need room.
MARGIN = 0.10
CHOSEN = ("load_4bit", "grad_checkpointing", "batch_size", "grad_accum")  # what the fast path may set


@dataclass(frozen=True)
class Choice:
    """The settings the fast path chose, the plan they give, and one sentence per decision."""

    load_4bit: bool
    grad_checkpointing: bool
    batch_size: int
    grad_accum: int
    plan: MemoryPlan
    fits: bool
    reasons: tuple[str, ...]


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _divisors_down(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def choose(
    planner: Planner,
    free: int,
    requested: dict,
    explicit: Iterable[str] = (),
    *,
    four_bit_available: bool = True,
) -> Choice:
    """Return the fastest of ``requested``'s variants that fits ``free`` bytes; settings in ``explicit`` stay as given.

    ``requested`` holds load_4bit, grad_checkpointing, batch_size and grad_accum as resolved (recipe defaults,
    file, flags); the recipe's batch is batch_size x grad_accum. A pure function of its arguments.
    """
    explicit = set(explicit)
    budget = free / (1 + MARGIN)
    batch = requested["batch_size"] * requested["grad_accum"]
    four_bits = [requested["load_4bit"]] if "load_4bit" in explicit else [False, True]
    if not four_bit_available:
        four_bits = [fb for fb in four_bits if not fb] or four_bits
    checkpointing = [requested["grad_checkpointing"]] if "grad_checkpointing" in explicit else [False, True]
    batch_given = {"batch_size", "grad_accum"} & explicit
    micros = [requested["batch_size"]] if batch_given else _divisors_down(batch)
    tried: dict[tuple[bool, bool, int], MemoryPlan] = {}

    def plan(fb: bool, ck: bool, micro: int) -> MemoryPlan:
        if (fb, ck, micro) not in tried:
            tried[fb, ck, micro] = planner(fb, ck, micro)
        return tried[fb, ck, micro]

    found = None
    for fb in four_bits:
        for ck in checkpointing:
            for micro in micros:
                if plan(fb, ck, micro).peak <= budget:
                    found = (fb, ck, micro)
                    break
            if found:
                break
        if found:
            break
    fits = found is not None
    fb, ck, micro = found or (four_bits[-1], checkpointing[-1], micros[-1])
    accum = requested["grad_accum"] if batch_given else batch // micro
    room = f"{gib(free)} free"
    reasons = []
    if "load_4bit" in explicit:
        reasons.append(f"4-bit {'on' if fb else 'off'}: as set")
    elif not fb:
        reasons.append(
            f"4-bit off: 16-bit frozen weights fit ({gib(plan(fb, ck, micro).peak)} planned, {room})"
        )
    elif not four_bit_available:
        reasons.append("4-bit off: bitsandbytes is not installed, so NF4 is no option")
    else:
        least = plan(False, checkpointing[-1], micros[-1]).peak
        reasons.append(f"4-bit on: 16-bit frozen weights need {gib(least)} at the least, {room}")
    if "grad_checkpointing" in explicit:
        reasons.append(f"activation checkpointing {'on' if ck else 'off'}: as set")
    elif not ck:
        reasons.append("activation checkpointing off: the activations fit, so nothing is recomputed")
    else:
        reasons.append(
            f"activation checkpointing on: without it the step needs {gib(plan(fb, False, micros[-1]).peak)}, {room}"
        )
    if batch_given:
        reasons.append(f"micro-batch {micro} x {accum} accumulation: as set")
    elif micro == batch:
        reasons.append(f"micro-batch {micro} x 1: the recipe's batch {batch} fits whole")
    else:
        bigger = micros[micros.index(micro) - 1]  # the next larger divisor: it did not fit
        reasons.append(
            f"micro-batch {micro} x {accum} accumulation (the recipe's batch {batch}): "
            f"micro-batch {bigger} would need {gib(plan(fb, ck, bigger).peak)}, {room}"
        )
    if not fits:
        reasons.append(
            f"nothing fits {room} (the planner's {MARGIN:.0%} margin kept): the smallest setting is tried"
        )
    return Choice(fb, ck, micro, accum, plan(fb, ck, micro), fits, tuple(reasons))


def free_memory(device: torch.device) -> int:
    """Return the bytes this process may still take on CUDA ``device``: the card's free memory, or the cap's."""
    free, total = torch.cuda.mem_get_info(device)
    fraction = torch.cuda.get_per_process_memory_fraction(device)
    if fraction < 1.0:
        free = min(free, int(fraction * total) - torch.cuda.memory_reserved(device))
    return max(free, 0)


def host_memory() -> int | None:
    """Return the bytes of host memory still available to this process, or None where the system does not say.

    Linux's MemAvailable (free memory plus what the page cache would give back), capped by the memory limit of
    the process's cgroup and each cgroup above it (a container, a batch-system job), less what they use.
    """
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError, IndexError):
        return None
    for folder in cgroup_folders():
        room = cgroup_room(folder)
        if room is not None:
            available = min(available, room)
    return max(available, 0)


def cgroup_folders() -> list[Path]:
    """Return this process's memory cgroup folder and those above it (v2 unified or v1 memory controller)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":  # v1
            base = Path("/sys/fs/cgroup/memory")
        elif controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").is_file():  # v2
            base = Path("/sys/fs/cgroup")
        else:
            continue
        own = base / path.lstrip("/")
        return [own, *[p for p in own.parents if p.is_relative_to(base)]]
    return []


def cgroup_room(folder: Path) -> int | None:
    """Return a cgroup's memory limit less what it uses (its reclaimable page cache not counted), or None."""
    v2 = (folder / "memory.max").is_file()
    names = ("memory.max", "memory.current", "inactive_file") if v2 else (
        "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")  # fmt: skip
    try:
        limit = int((folder / names[0]).read_text())
        usage = int((folder / names[1]).read_text())
    except (OSError, ValueError):  # no such file here, or "max": no limit
        return None
    try:
        stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
        usage -= int(stat.get(names[2], 0))
    except (OSError, ValueError):
        pass
    return limit - usage


def fit_to_host(cfg, planner: Planner) -> tuple[object, list[str]]:
    """Return (cfg, lines) for a CPU run: checkpointing on when the step without it overruns the host memory."""
    free = host_memory()
    if free is None or cfg.grad_checkpointing or "grad_checkpointing" in set(cfg.explicit):
        return cfg, []
    plain = planner(cfg.load_4bit, False, cfg.batch_size)
    if plain.peak <= free / (1 + MARGIN):
        return cfg, []
    checkpointed = planner(cfg.load_4bit, True, cfg.batch_size)
    return dataclasses.replace(cfg, grad_checkpointing=True), [
        f"host memory: activation checkpointing on: without it the step needs about {gib(plain.peak)}, with it "
        f"{gib(checkpointed.peak)}; {gib(free)} available (--no-grad-checkpointing or --no-auto-fit keep it off)"
    ]


def cap_memory(gib_cap: float | None, device: torch.device) -> str | None:
    """Cap this process's CUDA memory at ``gib_cap`` GiB (``--max-gpu-memory``); return the line saying so."""
    if gib_cap is None or device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, gib_cap * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return f"memory cap: {gib_cap:g} GiB of the card's {gib(total)} (--max-gpu-memory)"


def fit_to_device(cfg, paradigm, device: torch.device, resume: Path | None = None):
    """Return (cfg with the fast path's settings, the lines saying what was chosen and why) for ``device``.

    Nothing changes with --no-auto-fit or over several processes (each would see its own free memory and could
    choose differently); on the CPU only checkpointing may change (fit_to_host). A resumed run keeps the
    settings it was started with.
    """
    lines = [line] if (line := cap_memory(cfg.max_gpu_memory, device)) else []
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if device.type not in ("cuda", "cpu") or not cfg.auto_fit or cfg.fsdp or processes > 1:
        return cfg, lines
    explicit = set(cfg.explicit)
    if resume is not None:
        try:
            saved = json.loads((resume / "config.json").read_text())
        except (OSError, ValueError):  # check_resume names the missing or damaged file in its own sentence
            return cfg, lines
        if not isinstance(saved, dict):
            return cfg, lines
        kept = {k: saved[k] for k in CHOSEN if k not in explicit and k in saved}
        said = ["fast path: the settings the run was started with"] if device.type == "cuda" else []
        return dataclasses.replace(cfg, **kept), [*lines, *said]
    from medtune.core_models import get_preset
    from medtune.core_models.build import meta_model, train_dtype
    from medtune.tuning.apply import apply_paradigm

    preset = get_preset(cfg.preset)
    try:
        dtype = train_dtype(cfg.dtype, cfg.model_path, preset, device)
        meta = meta_model(preset, cfg.model_path, cfg.vision_tower)
    except (FileNotFoundError, ValueError):
        return cfg, lines  # plan_load says what is wrong with the checkpoint, in its own sentence
    tuned = apply_paradigm(meta, cfg.family, cfg.method, paradigm, cfg.method_options)
    if device.type == "cpu":
        cfg, chosen = fit_to_host(cfg, planner_for(tuned, torch.finfo(dtype).bits // 8))
        return cfg, [*lines, *chosen]
    choice = choose(
        planner_for(tuned, torch.finfo(dtype).bits // 8),
        free_memory(device),
        {k: getattr(cfg, k) for k in CHOSEN},
        explicit,
        four_bit_available=bitsandbytes_available(),
    )
    cfg = dataclasses.replace(cfg, **{k: getattr(choice, k) for k in CHOSEN})
    name = torch.cuda.get_device_name(device)
    return cfg, [
        *lines,
        f"fast path on {name} (--no-auto-fit keeps the recipe's settings):",
        *(f"  {r}" for r in choice.reasons),
    ]


def planner_for(tuned, dtype_bytes: int) -> Planner:
    """Return the memory planner of ``tuned`` (a meta-device Tuned) as the chooser asks it, SDPA attention."""

    def planner(four_bit: bool, grad_checkpointing: bool, batch: int) -> MemoryPlan:
        return plan_memory(
            tuned,
            batch=batch,
            four_bit=four_bit,
            grad_checkpointing=grad_checkpointing,
            dtype_bytes=dtype_bytes,
            fused_attention=True,
        )

    return planner


def bitsandbytes_available() -> bool:
    """Return whether NF4 is an option here (core-models owns the 4-bit dependency)."""
    from medtune.core_models.quantize import QuantizationUnavailable, require_bitsandbytes

    try:
        require_bitsandbytes()
    except QuantizationUnavailable:
        return False
    return True


def compile_blocks(model: nn.Module, backend: str) -> nn.Module:
    """Compile ``model``'s training forward region by region, in place, and return it.

    accelerate's regional compilation compiles each repeated decoder block once and reuses the code for the
    others (seconds to compile, not minutes). Its in-place form is used, so parameter names, hooks and every
    unwrap stay the model's own: adapters and checkpoints are written exactly as without compilation.
    """
    from accelerate.utils.other import compile_regions_fsdp2

    return compile_regions_fsdp2(model, backend=backend)


def run_eager(fn, *args, **kwargs):
    """Return ``fn(...)`` with compiled modules run eagerly: evaluation and generation change shapes every call."""
    with torch.compiler.set_stance("force_eager"):
        return fn(*args, **kwargs)
