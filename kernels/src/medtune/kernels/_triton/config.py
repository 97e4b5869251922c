"""Launch shapes shared by the norm kernels: block size, warps, and the backward's program count."""

from __future__ import annotations

import functools

import torch

from medtune.kernels._runtime import interpreting

# A row must fit in one program's registers; 65536 fp32 values is where 32 warps run out.
MAX_HIDDEN = 65536
# Under the interpreter every program is a Python loop: a few programs still exercise the
# strided row loop and the two-stage dgamma reduction without making tests slow.
INTERPRETER_PROGRAMS = 4


def block_size(hidden: int) -> int:
    """Return the power-of-two block that covers a row of `hidden` values."""
    if hidden > MAX_HIDDEN:
        raise ValueError(
            f"medtune.kernels supports hidden sizes up to {MAX_HIDDEN}, got {hidden}; "
            "use torch.nn.functional for wider rows."
        )
    return 1 << max(hidden - 1, 0).bit_length()


def num_warps(block: int) -> int:
    """Return warps per forward program for a row block of `block` values.

    Chosen by `bench_norms.py --sweep` on an H200 (benchmarks/kernels/README.md): 8 warps beat 16 at
    widths 5120 and 8192 (69% against 56% of peak bandwidth at 5120 for LayerNorm), 2 beat 4 at 768.
    """
    if block <= 1024:
        return 2
    if block <= 2048:
        return 4
    if block <= 8192:
        return 8
    if block <= 16384:
        return 16
    return 32


def backward_warps(block: int) -> int:
    """Return warps per backward program: at most 16 row values per thread up to 8192, more beyond.

    `python -m medtune.kernels.resources` compiles every launch and shows this keeps all rows up to
    8192 in registers on sm_90; wider backward rows spill (README).
    """
    if block <= 1024:
        return 4
    if block <= 4096:
        return 8
    if block <= 16384:
        return 16
    return 32


def backward_waves(block: int) -> int:
    """Return backward programs per SM: enough rows in flight to hide memory latency, few enough that the
    fp32 [programs, hidden] partial sums stay small next to the rows themselves.

    Registers bound how many programs an SM holds at once (two at 4096, 8 warps), so more waves only help
    narrow rows: at 768, 8 waves run the backward in 0.054 ms against 0.066 ms for 4 (H200 sweep).
    """
    return 8 if block <= 1024 else 2 if block <= 4096 else 1


def backward_prefetch(block: int) -> bool:
    """Return whether each backward program loads its next row while it reduces the current one.

    Off until a GPU measures it (`bench_norms.py --sweep` times both). The bf16 backward is bound by
    rows in flight (benchmarks/kernels/README.md); prefetching doubles them per program without
    costing occupancy: ptxas fits it in 123 registers for LayerNorm at 4096 (two programs per SM, as
    without it) and spills nothing up to 8192, and the SASS issues the next row's loads before the
    current row's cross-warp reduction.
    """
    return False


def launch_options(block: int, backward: bool = False) -> dict[str, int | bool]:
    """Return the compile options of a norm launch (forward, or `backward`) for a row block of `block` values.

    FMA contraction is asked for explicitly: Triton's default for it changes between releases, and
    the kernels' numerics (and their test tolerances) should not change with it.
    """
    warps = backward_warps(block) if backward else num_warps(block)
    return {"num_warps": warps, "enable_fp_fusion": True}


@functools.lru_cache(maxsize=16)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def backward_programs(x: torch.Tensor, n_rows: int, block: int) -> int:
    """Return how many programs the backward launches; each owns a strided set of rows."""
    if interpreting() or not x.is_cuda:
        return max(1, min(n_rows, INTERPRETER_PROGRAMS))
    return max(1, min(n_rows, _sm_count(x.device.index or 0) * backward_waves(block)))
