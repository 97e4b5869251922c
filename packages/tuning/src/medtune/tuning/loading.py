"""Loading a run's base: plan it on the meta device, check it fits, load it straight into its dtype (or NF4).

What trains is decided by the method and the paradigm, and a weight quantised while it loads can no longer be
trained, so the plan applies them to a weightless copy of the checkpoint's model first: that names the linear
layers to keep in full precision and gives the memory planner the model it estimates.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass

import torch
from torch import nn

from medtune.core_models import Built, CheckpointError, get_preset, load
from medtune.core_models.build import check_device_runs, meta_model, train_dtype
from medtune.tuning.apply import Tuned, apply_paradigm
from medtune.tuning.errors import UsageError
from medtune.tuning.fast_path import free_memory
from medtune.tuning.memory import GIB, MemoryPlan, plan_memory
from medtune.tuning.paradigm import Paradigm
from medtune.tuning.recipes import TrainConfig


@dataclass
class LoadPlan:
    """What a run will load and how: the dtype, the linears kept out of NF4, and the memory it plans for."""

    dtype: torch.dtype
    four_bit: object | None  # a medtune.core_models.quantize.FourBit, or None
    trainable: frozenset[str]  # parameter names that will train (as apply_paradigm names them)
    memory: MemoryPlan
    counts: dict  # the paper's accounting, from the meta model (an NF4 weight would count its packed bytes)


def trainable_linears(tuned: Tuned) -> frozenset[str]:
    """Return the base-model names of the linear layers with a trainable weight or bias (PEFT's own excluded)."""
    names = set()
    for name, module in tuned.model.named_modules():
        trains = any(p.requires_grad for p in module.parameters(recurse=False))
        if isinstance(module, nn.Linear) and ".lora_" not in name and trains:
            names.add(name.removeprefix("base_model.model.").replace(".base_layer", ""))
    return frozenset(names)


def plan_load(cfg: TrainConfig, paradigm: Paradigm, device: torch.device) -> LoadPlan:
    """Return the load plan of ``cfg`` on ``device``: everything is worked out on the meta device."""
    preset = get_preset(cfg.preset)
    try:
        dtype = train_dtype(cfg.dtype, cfg.model_path, preset, device)
        meta = meta_model(preset, cfg.model_path, cfg.vision_tower)
    except (FileNotFoundError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise UsageError(str(err)) from None
    if device.type == "cpu" and dtype == torch.float16:
        raise UsageError(
            "--dtype fp16 trains only on a GPU (on the CPU there is no fp16 mixed precision to keep the fp32 "
            "trained tensors and the fp16 frozen ones apart); use --dtype bf16 or fp32 there"
        )
    tuned = apply_paradigm(meta, cfg.family, cfg.method, paradigm, cfg.method_options)
    four_bit = None
    if cfg.load_4bit:
        from medtune.core_models.quantize import FourBit, QuantizationUnavailable, require_bitsandbytes

        try:
            require_bitsandbytes()
        except QuantizationUnavailable as err:
            raise UsageError(str(err)) from None
        four_bit = FourBit(keep=trainable_linears(tuned))
    memory = plan_memory(
        tuned,
        batch=cfg.batch_size,
        four_bit=cfg.load_4bit,
        grad_checkpointing=cfg.grad_checkpointing,
        dtype_bytes=torch.finfo(dtype).bits // 8,
        fused_attention=device.type == "cuda",
    )
    return LoadPlan(dtype, four_bit, tuned.trainable, memory, tuned.counts())


def check_fits(plan: LoadPlan, device: torch.device, cfg: TrainConfig) -> None:
    """Raise UsageError, before anything loads, when the planned peak exceeds the CUDA device's free memory."""
    if device.type != "cuda":
        return
    free = free_memory(device)  # the card's free memory, or what --max-gpu-memory leaves
    peak = plan.memory.peak
    if peak <= free:
        return
    options = [] if cfg.load_4bit else ["--4bit"]
    options += [] if cfg.grad_checkpointing else ["--grad-checkpointing"]
    options += [f"a smaller --batch-size (now {cfg.batch_size})"] if cfg.batch_size > 1 else []
    raise UsageError(
        f"this run needs about {peak / GIB:.1f} GiB (load {plan.memory.load_peak / GIB:.1f} GiB, training step "
        f"{plan.memory.total / GIB:.1f} GiB) but {torch.cuda.get_device_name(device)} has {free / GIB:.1f} GiB "
        f"free; try {', '.join(options) or 'a GPU with more memory'}"
    )


def load_base(cfg: TrainConfig, plan: LoadPlan | None = None, device: torch.device | None = None) -> Built:
    """Return the base as ``plan`` says (NF4 frozen linears under --4bit), on ``device``; bad paths are usage errors."""
    device = device if device is not None else torch.device("cpu")
    dtype = (
        plan.dtype
        if plan is not None
        else train_dtype(cfg.dtype, cfg.model_path, get_preset(cfg.preset), device)
    )
    try:
        check_device_runs(dtype, device, f"--dtype {cfg.dtype}")
        return load(
            cfg.preset,
            cfg.model_path,
            dtype=dtype,
            four_bit=plan.four_bit if plan is not None else None,
            device=device,
            vision_tower=cfg.vision_tower,
        )
    except (FileNotFoundError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise UsageError(str(err)) from None


def train_in_fp32(tuned: Tuned, plan: LoadPlan) -> None:
    """Keep every trained tensor in fp32 (a 16-bit one cannot absorb small updates) after checking the plan held.

    The NF4 layers were chosen from the plan's trainable set; a model that trains something else would tune
    a weight that was quantised, so that is a bug, and it stops the run.
    """
    if tuned.trainable != plan.trainable:
        extra = sorted(tuned.trainable ^ plan.trainable)
        raise RuntimeError(f"the loaded model trains other tensors than planned: {', '.join(extra[:4])}")
    for param in tuned.model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def mixed_precision(dtype: torch.dtype, cfg: TrainConfig) -> str:
    """Return accelerate's mixed-precision mode for frozen weights in ``dtype`` (fp32 trained tensors beside them)."""
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float16:
        return "fp16"
    return "bf16" if cfg.bf16 and torch.cuda.is_available() else "no"


def current_memory(device: torch.device) -> int:
    """Return this process's memory in bytes now: CUDA memory_allocated, else the resident set (Linux; else the peak)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_memory(device)


def peak_memory(device: torch.device) -> int:
    """Return this process's peak memory in bytes so far: CUDA max_memory_allocated, else the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes
