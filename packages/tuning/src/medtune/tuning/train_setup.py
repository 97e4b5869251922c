"""A training run's setup: its data (run_data.py), accelerator, base model, method, optimiser and resume point.

`set_up` does these in the order they depend on one another and returns them as one `Run`; the loop in
`medtune.tuning.train` reads nothing else.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch.utils.data import DataLoader
from transformers import get_scheduler

from medtune.core_models import Built
from medtune.core_models.build import full_precision_weights
from medtune.data.run_files import CONFIG, METRICS
from medtune.eval.scores import format_scores
from medtune.tuning.adapter import base_fingerprint
from medtune.tuning.apply import Tuned, apply_paradigm
from medtune.tuning.checkpoint import EpochShuffle, Position, check_resume, find_checkpoint, load_checkpoint
from medtune.tuning.errors import UsageError
from medtune.tuning.evaluate import evaluate
from medtune.tuning.fast_path import compile_blocks, fit_to_device
from medtune.tuning.fsdp import shard_model
from medtune.tuning.loading import (
    LoadPlan,
    check_fits,
    current_memory,
    load_base,
    mixed_precision,
    peak_memory,
    plan_load,
    train_in_fp32,
)
from medtune.tuning.paradigm import Paradigm
from medtune.tuning.recipes import TrainConfig
from medtune.tuning.run_data import RunData, announce_data, describe_run, make_loader, read_data
from medtune.tuning.run_dir import clean_interrupted, new_run_dir, truncate_metrics, write_json_atomic
from medtune.tuning.stored_tensors import Located


@dataclass
class Run:
    """Everything the loop and the finish read, as `set_up` leaves it."""

    cfg: TrainConfig  # as fitted to the device
    accelerator: Accelerator
    data: RunData
    run_config: dict  # what config.json holds
    run_dir: Path
    built: Built
    tuned: Tuned
    counts: dict  # parameter counts, from the meta model
    manifest: dict  # the adapter's manifest
    before: dict | None  # the base's scores before tuning
    model: torch.nn.Module  # prepared by the accelerator (or sharded)
    sampler: EpochShuffle
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    micro_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    position: Position
    resumed: bool

    @property
    def main(self) -> bool:
        """Return whether this is the process that writes the run directory."""
        return self.accelerator.is_main_process


def set_up(cfg: TrainConfig, *, resume: Path | None, progress: bool) -> Run:
    """Return the run ready for its first (or, with ``resume``, its next) step, its directory written."""
    paradigm = Paradigm.parse(cfg.paradigm, cfg.family)
    # On a GPU, the fastest settings that fit the card (4-bit, checkpointing, micro-batch); given ones are kept.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg, fast_path = fit_to_device(cfg, paradigm, device, resume)
    data = read_data(cfg)
    run_config = describe_run(cfg, paradigm, data)
    if resume is not None:
        check_resume(resume, run_config)
        find_checkpoint(resume)  # a run with no checkpoint is refused before any weight loads
    seed_everything(cfg.seed)
    # Planned on the meta device before any weight loads: the dtype, what trains, and the memory it takes.
    plan = plan_load(cfg, paradigm, device)
    accelerator = start_accelerator(cfg, plan, fast_path)
    main, say = accelerator.is_main_process, accelerator.print
    checkpoint = reopen(resume, accelerator) if resume is not None else None
    built, measured = load_measured(cfg, plan, accelerator.device)
    run_dir = resume if resume is not None else shared_run_dir(accelerator, cfg)
    announce_data(accelerator, cfg, data, run_dir, resuming=resume is not None)
    before = (
        score_base(cfg, built, data, say, progress) if cfg.eval_before and resume is None and main else None
    )
    tuned = tune(cfg, built, plan, paradigm, say)
    record_model(run_config, plan, built, accelerator.device, measured)
    if main and resume is None:
        write_json_atomic(run_dir / CONFIG, run_config)
    manifest = adapter_manifest(cfg, paradigm, built, tuned)
    announce_model(cfg, paradigm, plan.counts, built, say)
    if cfg.fsdp:
        shard(cfg, built, tuned.model, say)
    sampler, loader = make_loader(cfg, built, data.train, run_config["dataset"]["fingerprint"])
    optimizer = torch.optim.AdamW(param_groups(tuned, cfg.weight_decay), lr=cfg.lr)
    model, loader = prepare(accelerator, cfg, tuned, loader)
    micro_per_epoch = len(loader)
    if micro_per_epoch == 0:  # else the step loop would spin without ever taking a step
        raise UsageError(
            f"the train split of {data.source} gave no batch to train on; it needs at least one record"
        )
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    scheduler = get_scheduler(
        cfg.scheduler,
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    position = Position()
    if checkpoint is not None:
        position = resume_position(checkpoint, run_dir, accelerator, model, optimizer, scheduler)
    return Run(
        cfg, accelerator, data, run_config, run_dir, built, tuned, plan.counts, manifest, before, model,
        sampler, loader, optimizer, scheduler, micro_per_epoch, steps_per_epoch, total_steps, position,
        resume is not None,
    )  # fmt: skip


def score_base(cfg: TrainConfig, built: Built, data: RunData, say, progress: bool) -> dict:
    """Return the untuned base's scores on the test split (the summary's "scores before")."""
    before = evaluate(built, data.test, max_new_tokens=data.max_new_tokens, seed=cfg.seed, progress=progress)
    say(f"before tuning: {format_scores(before)}")
    return before


def resume_position(
    checkpoint: Path, run_dir: Path, accelerator: Accelerator, model, optimizer, scheduler
) -> Position:
    """Return where ``checkpoint`` left off, with the tuned tensors, optimizer, schedule and RNG states restored.

    metrics.jsonl is cut back to that step, so the rows the killed run logged past it are not kept twice.
    """
    position = load_checkpoint(
        checkpoint, model=accelerator.unwrap_model(model), optimizer=optimizer, scheduler=scheduler
    )
    if accelerator.is_main_process:
        truncate_metrics(run_dir / METRICS, position.step)
    accelerator.print(
        f"resumed from {checkpoint.name} at step {position.step} (epoch {position.epoch}, "
        f"batch {position.batch_in_epoch})"
    )
    return position


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run repeats."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start_accelerator(cfg: TrainConfig, plan: LoadPlan, fast_path: list[str]) -> Accelerator:
    """Return the accelerator for this process, refusing launched processes that did not join one group."""
    # Accumulation is done by hand in the loop so that the step boundaries survive a resume exactly.
    accelerator = Accelerator(mixed_precision=mixed_precision(plan.dtype, cfg))
    for line in fast_path:
        accelerator.print(line)
    launched = os.environ.get("MEDTUNE_LAUNCHED_PROCESSES")
    if launched and accelerator.num_processes != int(launched):
        # Before anything is written: each of the launched processes would otherwise make its own run.
        raise UsageError(
            f"{launched} processes were launched but this one sees a group of {accelerator.num_processes}: "
            "they did not join one distributed run. An accelerate config for GPUs does this on a machine "
            "without them; on a CPU use --num-processes alone (torchrun with gloo)"
        )
    if cfg.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return accelerator


def reopen(resume: Path, accelerator: Accelerator) -> Path:
    """Return the checkpoint to resume from, once the main process has put back what a kill left half-replaced."""
    if (
        accelerator.is_main_process
    ):  # a kill mid-replace left .old/.tmp folders: the last complete copies return
        for line in clean_interrupted(resume):
            accelerator.print(line)
    accelerator.wait_for_everyone()
    return find_checkpoint(resume)


def load_measured(cfg: TrainConfig, plan: LoadPlan, device: torch.device) -> tuple[Built, dict[str, int]]:
    """Return the base loaded onto ``device`` (each NF4 layer quantised as it loads) and the memory measured.

    The bytes are the process's before loading (on the CPU the interpreter and libraries, which the plan,
    counting tensors, leaves out; 0 on a GPU) and the load phase's peak.
    """
    check_fits(plan, device, cfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = current_memory(device)
    built = load_base(cfg, plan, device)
    if device.type == "cpu":  # host memory is the CPU run's limit: freed step tensors go back to the system
        from medtune.core_models.weights import keep_returning_freed_memory

        keep_returning_freed_memory()
    measured = {"measured_before_load_bytes": before, "measured_load_peak_bytes": peak_memory(device)}
    return built, measured


def shared_run_dir(accelerator: Accelerator, cfg: TrainConfig) -> Path:
    """Return a new run directory made by the main process and shared with every other process."""
    name = [str(new_run_dir(cfg.output_dir, cfg.family, cfg.method)) if accelerator.is_main_process else ""]
    if accelerator.num_processes > 1:
        name = broadcast_object_list(name)
    return Path(name[0])


def tune(cfg: TrainConfig, built: Built, plan: LoadPlan, paradigm: Paradigm, say) -> Tuned:
    """Return ``cfg.method`` applied to the loaded base under ``paradigm`` (``built.model`` follows it)."""
    tuned = apply_paradigm(built.model, cfg.family, cfg.method, paradigm, cfg.method_options)
    train_in_fp32(tuned, plan)
    built.model = tuned.model
    if cfg.grad_checkpointing:
        # Non-reentrant checkpointing back-propagates into a block even when none of its inputs require grad
        # (the frozen-embeddings trap of the reentrant variant, which would silently give LN-tuning no grads).
        enable_checkpointing(tuned.model)
    if cfg.fused_norms and cfg.method == "ln" and torch.cuda.is_available():
        from medtune.kernels import patch_norms

        say(patch_norms(tuned.model).summary().splitlines()[0] + " with the fused Triton kernel")
    return tuned


def enable_checkpointing(model) -> None:
    """Turn on non-reentrant activation checkpointing (transformers 5 renamed the method)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # transformers also makes every input embedding's output require grad, which only the reentrant variant
    # needs; it pulls a frozen vision tower into the backward (recomputed and back-propagated for nothing).
    model.disable_input_require_grads()


def record_model(
    run_config: dict, plan: LoadPlan, built: Built, device: torch.device, measured: dict[str, int]
) -> None:
    """Add to ``run_config`` what was loaded: its source, parameter counts, load dtype and memory so far."""
    counts = plan.counts  # from the meta model: NF4 weights hold two values per stored byte
    run_config["base_source"] = built.source
    run_config["params"] = {
        "total": counts["total_params"],
        "trainable": counts["trainable_params"],
        "peft": counts["peft_params"],
        "groups": counts["groups"],
    }
    run_config["load_dtype"] = str(built.dtype).removeprefix("torch.")
    run_config["memory"] = {
        "planned_peak_bytes": plan.memory.peak,
        "planned_load_peak_bytes": plan.memory.load_peak,
        "planned_step_peak_bytes": plan.memory.total,
        "measured_by": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS",
        **measured,
    }


def announce_model(cfg: TrainConfig, paradigm: Paradigm, counts: dict, built: Built, say) -> None:
    """Say how many parameters train and, on a 4-bit run, how many frozen layers hold NF4 weights."""
    say(
        f"{cfg.method} under {paradigm}: {counts['trainable_params']:,} of {counts['total_params']:,} parameters "
        f"train ({100 * counts['trainable_ratio']:.4f}%)"
    )
    if cfg.load_4bit:
        say(
            f"4-bit: {len(built.quantized)} frozen linear layers now NF4 (quantised as they loaded), the rest "
            f"in {str(built.dtype).removeprefix('torch.')}"
        )


def shard(cfg: TrainConfig, built: Built, model: torch.nn.Module, say) -> None:
    """Shard ``model`` in place with FSDP2, one unit per decoder layer plus the root."""
    layers = shard_model(
        model,
        built.preset.decoder_layer,  # the vlm family's is the loaded checkpoint's own
        bf16=cfg.bf16 and torch.cuda.is_available(),
    )
    say(f"FSDP2: {layers} {built.preset.decoder_layer} units + the root, full shard")


def adapter_manifest(cfg: TrainConfig, paradigm: Paradigm, built: Built, tuned: Tuned) -> dict:
    """Return the manifest every adapter of this run is saved with."""
    # NF4 weights are fingerprinted as the checkpoint holds them, naming the full-precision base the adapter fits;
    # only their sampled values are read (reading them whole held ~1.2 GB more at 0.8B parameters).
    fingerprint = base_fingerprint(
        tuned.model,
        exclude=tuned.trainable,
        full_precision=Located(full_precision_weights(built, tuned.model)),
    )
    return {
        "preset": cfg.preset,
        "family": cfg.family,
        "method": cfg.method,
        "paradigm": str(paradigm),
        "base_fingerprint": fingerprint,
        "base_source": built.source,
        "method_config": tuned.details,  # the method's whole config: rebuild_from_manifest needs nothing else
        # Tuned against NF4 frozen weights; export merges into the full-precision base all the same.
        "trained_4bit": cfg.load_4bit,
    }


def param_groups(tuned: Tuned, weight_decay: float) -> list[dict]:
    """AdamW groups: norms, biases and 1-D tensors get no weight decay (LN-tuned norms never do)."""
    decay, no_decay = [], []
    for name, p in tuned.model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    return [
        g
        for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
        if g["params"]
    ]


def prepare(
    accelerator: Accelerator, cfg: TrainConfig, tuned: Tuned, loader: DataLoader
) -> tuple[torch.nn.Module, DataLoader]:
    """Return the model and loader as the loop uses them: distributed by the accelerator, compiled if asked."""
    # Only the model and the data are prepared: the step count is ours, so the schedule is the same for
    # one process with batch 2B and two processes with batch B. A sharded model is already distributed.
    if cfg.fsdp:
        model, loader = tuned.model, accelerator.prepare(loader)
    else:
        model, loader = accelerator.prepare(tuned.model, loader)
    if cfg.torch_compile:  # in place, so names and unwrapping are unchanged; evaluation runs eagerly
        compile_blocks(accelerator.unwrap_model(model), cfg.torch_compile_backend)
        accelerator.print(
            f"torch.compile ({cfg.torch_compile_backend}): training forward compiled block by block"
        )
    return model, loader
