"""The training loop: one plain function you can read top to bottom."""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from medtune.core_models import Built
from medtune.core_models.build import full_precision_weights
from medtune.data import Rejection, demo_dataset, write_rejections
from medtune.data.workers import CarryErrors, raise_carried
from medtune.eval import plot_loss
from medtune.tuning.adapter import base_fingerprint, save_adapter, tuned_state
from medtune.tuning.apply import Tuned, apply_paradigm
from medtune.tuning.batches import GROUP_WINDOW, LengthGroupedShuffle, make_collator, sample_lengths
from medtune.tuning.checkpoint import (
    EpochShuffle,
    Position,
    check_resume,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from medtune.tuning.datasets import (
    MAX_NEW_TOKENS,
    check_held_out,
    data_fingerprint,
    eval_layout,
    format_scores,
    read_records,
)
from medtune.tuning.errors import UsageError
from medtune.tuning.evaluate import evaluate, validation_loss
from medtune.tuning.fast_path import compile_blocks, fit_to_device, run_eager
from medtune.tuning.fsdp import shard_model, skip_gradient_sync
from medtune.tuning.loading import (
    check_fits,
    load_base,
    mixed_precision,
    peak_memory,
    plan_load,
    train_in_fp32,
)
from medtune.tuning.paradigm import Paradigm
from medtune.tuning.recipes import TrainConfig
from medtune.tuning.run_dir import (
    MetricsLog,
    clean_interrupted,
    new_run_dir,
    truncate_metrics,
    write_json_atomic,
)
from medtune.tuning.shards import real_rows, weight_padding
from medtune.tuning.trackers import start_trackers


@dataclass
class RunResult:
    """What a finished run reports in its closing summary."""

    run_dir: Path
    counts: dict
    first_loss: float
    last_loss: float
    before: dict | None
    after: dict | None
    seconds: float
    memory: dict | None = None  # planned and measured peak bytes (see peak_memory)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run repeats."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def train(cfg: TrainConfig, *, progress: bool = True, resume: Path | None = None) -> RunResult:
    """Tune ``cfg.preset`` with ``cfg.method`` under ``cfg.paradigm``; evaluate; write the run directory.

    With ``resume``, continue that run directory from its last checkpoint (same configuration only).
    """
    started = time.perf_counter()
    paradigm = Paradigm.parse(cfg.paradigm, cfg.family)
    # On a GPU, the fastest settings that fit the card (4-bit, checkpointing, micro-batch); given ones are kept.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg, fast_path = fit_to_device(cfg, paradigm, device, resume)
    source = Path(cfg.dataset).expanduser() if cfg.dataset else demo_dataset("downstream")
    rejected: list[Rejection] = []
    layout = {"columns": cfg.columns, "image_folder": cfg.image_folder}
    task, train_records = read_records(source, "train", cfg.task, cfg.on_invalid, rejected, **layout)
    test_source = Path(cfg.eval_dataset).expanduser() if cfg.eval_dataset else source
    scored = cfg.eval_after or cfg.eval_before
    if scored and test_source == source:
        check_held_out(source, task, "test")
    if cfg.eval_every:
        check_held_out(source, task, "validation")
    test_records = (
        read_records(
            test_source, "test", task, cfg.on_invalid, rejected, **eval_layout(source, test_source, layout)
        )[1]
        if scored
        else []
    )
    val_records = (
        read_records(source, "validation", task, cfg.on_invalid, rejected, **layout)[1]
        if cfg.eval_every
        else []
    )
    max_new_tokens = cfg.max_new_tokens or MAX_NEW_TOKENS[task]
    run_config = {
        **cfg.to_json(),
        "dataset": {
            "source": str(source.resolve()),
            "name": source.name,
            "task": task,
            "fingerprint": data_fingerprint(train_records, source),
        },
        "groups": list(paradigm.groups),
    }
    if resume is not None:
        check_resume(resume, run_config)
        checkpoint = find_checkpoint(resume)
    seed_everything(cfg.seed)
    # Accumulation is done by hand below so that the step boundaries survive a resume exactly.
    # Planned on the meta device before any weight loads: the dtype, what trains, and the memory it takes.
    plan = plan_load(cfg, paradigm, device)
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
    main = accelerator.is_main_process
    if resume is not None:
        if main:  # a kill mid-replace left .old/.tmp folders: put the last complete copies back in place
            for line in clean_interrupted(resume):
                accelerator.print(line)
        accelerator.wait_for_everyone()
        checkpoint = find_checkpoint(resume)
    if cfg.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    check_fits(plan, accelerator.device, cfg)
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    # Straight to the device, each NF4 layer quantised as it loads.
    built = load_base(cfg, plan, accelerator.device)
    loaded_peak = peak_memory(accelerator.device)  # the load phase's peak, before any step
    run_dir = resume if resume is not None else shared_run_dir(accelerator, cfg)
    say = accelerator.print
    say(f"run directory: {run_dir}{' (resuming)' if resume is not None else ''}")
    say(
        f"data: {source} ({task}: {len(train_records)} train / {len(test_records)} test {'questions' if task == 'vqa' else 'studies'})"
    )
    if cfg.on_invalid == "report":
        if main:
            write_rejections(rejected, run_dir)
        say(f"rejected {len(rejected)} invalid record(s), each listed in {run_dir / 'rejected.jsonl'}")

    before = None
    if cfg.eval_before and resume is None and main:
        before = evaluate(
            built, test_records, max_new_tokens=max_new_tokens, seed=cfg.seed, progress=progress
        )
        say(f"before tuning: {format_scores(before)}")

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
        "measured_by": "cuda max_memory_allocated" if accelerator.device.type == "cuda" else "peak RSS",
        "measured_load_peak_bytes": loaded_peak,
    }
    if main and resume is None:
        write_json_atomic(run_dir / "config.json", run_config)
    say(
        f"{cfg.method} under {paradigm}: {counts['trainable_params']:,} of {counts['total_params']:,} parameters "
        f"train ({100 * counts['trainable_ratio']:.4f}%)"
    )
    # NF4 weights are fingerprinted as the checkpoint holds them, naming the full-precision base the adapter fits.
    fingerprint = base_fingerprint(
        tuned.model, exclude=tuned.trainable, full_precision=full_precision_weights(built, tuned.model)
    )
    if cfg.load_4bit:
        say(
            f"4-bit: {len(built.quantized)} frozen linear layers now NF4 (quantised as they loaded), the rest "
            f"in {str(built.dtype).removeprefix('torch.')}"
        )
    manifest = {
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

    if cfg.fsdp:
        layers = shard_model(
            tuned.model,
            built.preset.decoder_layer,  # the vlm family's is the loaded checkpoint's own
            bf16=cfg.bf16 and torch.cuda.is_available(),
        )
        say(f"FSDP2: {layers} {built.preset.decoder_layer} units + the root, full shard")

    collator = make_collator(built, train=True)
    sampler = (
        LengthGroupedShuffle(sample_lengths(collator, train_records), cfg.seed, GROUP_WINDOW * cfg.batch_size)
        if cfg.group_by_length
        else EpochShuffle(len(train_records), cfg.seed)
    )
    workers = cfg.dataloader_num_workers
    loader = DataLoader(
        train_records,
        batch_size=cfg.batch_size,
        sampler=sampler,
        # In workers, a bad sample's error comes back as data and is raised below, sentence intact.
        collate_fn=CarryErrors(collator) if workers else collator,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    optimizer = torch.optim.AdamW(param_groups(tuned, cfg.weight_decay), lr=cfg.lr)
    # Only the model and the data are prepared: the step count is ours, so the schedule is the same for
    # one process with batch 2B and two processes with batch B. A sharded model is already distributed.
    if cfg.fsdp:
        model, loader = tuned.model, accelerator.prepare(loader)
    else:
        model, loader = accelerator.prepare(tuned.model, loader)
    if cfg.torch_compile:  # in place, so names and unwrapping are unchanged; evaluation below runs eagerly
        compile_blocks(accelerator.unwrap_model(model), cfg.torch_compile_backend)
        say(f"torch.compile ({cfg.torch_compile_backend}): training forward compiled block by block")
    micro_per_epoch = len(loader)
    if micro_per_epoch == 0:  # else the step loop below would spin without ever taking a step
        raise UsageError(
            f"the train split of {source} gave no batch to train on; it needs at least one record"
        )
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    scheduler = get_scheduler(
        cfg.scheduler,
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    position = Position()
    if resume is not None:
        position = load_checkpoint(
            checkpoint, model=accelerator.unwrap_model(model), optimizer=optimizer, scheduler=scheduler
        )
        if main:
            truncate_metrics(run_dir / "metrics.jsonl", position.step)
        say(
            f"resumed from {checkpoint.name} at step {position.step} (epoch {position.epoch}, "
            f"batch {position.batch_in_epoch})"
        )

    metrics = MetricsLog(run_dir / "metrics.jsonl") if main else None
    board = start_trackers(cfg.report_to, run_dir, run_config) if main else None  # --report-to
    tokens, window_start = 0, time.perf_counter()
    bar = tqdm(
        total=total_steps,
        initial=position.step,
        desc=f"{cfg.method} tuning",
        unit="step",
        disable=not progress or not main,
    )
    model.train()
    while position.step < total_steps:
        sampler.start(position.epoch, position.batch_in_epoch * cfg.batch_size * accelerator.num_processes)
        step_loss, first, samples = 0.0, position.batch_in_epoch, len(sampler)
        for micro, batch in enumerate(loader, start=position.batch_in_epoch):
            batch = raise_carried(batch)
            batch.pop("qids", None)
            # Several processes: the last round's top-up repeats get no labels, and each process's mean loss
            # counts by its label tokens, so the step equals one process's at the whole round's batch.
            real = real_rows(
                micro - first, samples, cfg.batch_size, accelerator.process_index, accelerator.num_processes
            )
            share = weight_padding(batch, real, accelerator)
            group_start = micro - micro % cfg.grad_accum
            in_step = min(cfg.grad_accum, micro_per_epoch - group_start)
            ends_step = micro + 1 == group_start + in_step
            with skip_gradient_sync(model, accelerator, skip=not ends_step):
                loss = model(**batch).loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(diverged_message(loss.item(), position.step + 1, run_dir, cfg))
                accelerator.backward(loss * share / in_step)
            step_loss += loss.item() * share / in_step
            tokens += int(batch["attention_mask"].sum())
            position.batch_in_epoch = micro + 1
            if not ends_step:
                continue
            accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            position.step += 1
            if position.batch_in_epoch == micro_per_epoch:
                position.epoch, position.batch_in_epoch = position.epoch + 1, 0
            position.losses.append(
                accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "mean").item()
            )
            step_loss = 0.0
            tokens_per_s = accelerator.reduce(
                torch.tensor(tokens, device=accelerator.device), "sum"
            ).item() / max(time.perf_counter() - window_start, 1e-9)
            lr = scheduler.get_last_lr()[0]
            bar.update(1)
            bar.set_postfix(loss=f"{position.losses[-1]:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")
            if main and (position.step % cfg.log_every == 0 or position.step == total_steps):
                row = {
                    "step": position.step,
                    "epoch": position.step / steps_per_epoch,
                    "loss": float(np.mean(position.losses[-cfg.log_every :])),
                    "lr": lr,
                    "seconds": time.perf_counter() - started,
                    "tokens_per_s": tokens_per_s,
                }
                metrics.write(**row)
                if board is not None:
                    board.log({f"train/{k}": row[k] for k in ("loss", "lr", "tokens_per_s")}, position.step)
                tokens, window_start = 0, time.perf_counter()
            if cfg.eval_every and (position.step % cfg.eval_every == 0 or position.step == total_steps):
                built.model = accelerator.unwrap_model(model)
                val_loss = run_eager(validation_loss, built, val_records, batch_size=4 * cfg.batch_size)
                best = position.best_val_loss is None or val_loss < position.best_val_loss
                if best:
                    position.best_val_loss = val_loss
                # Gathering sharded tensors is a collective, so every process takes part.
                best_state = tuned_state(built.model, tuned.trainable) if best else None
                if main:
                    metrics.write(step=position.step, val_loss=val_loss)
                    if board is not None:
                        board.log({"validation/loss": val_loss}, position.step)
                    if best:
                        save_adapter(
                            run_dir / "best",
                            built.model,
                            tuned.trainable,
                            {**manifest, "step": position.step, "val_loss": val_loss},
                            state=best_state,
                        )
                    plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png")
                if main:  # every process computed the same validation loss; say it once
                    bar.write(
                        f"step {position.step}: validation loss {val_loss:.4f}{' (best)' if best else ''}"
                    )
            if main and cfg.save_every and position.step % cfg.save_every == 0:
                save_checkpoint(
                    run_dir,
                    model=accelerator.unwrap_model(model),
                    names=tuned.trainable,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    position=position,
                )
            if position.step >= total_steps:
                break
    bar.close()
    if metrics is not None:
        metrics.close()
    if board is not None:
        board.close()

    model = accelerator.unwrap_model(model)
    built.model = model
    after = None
    state = tuned_state(model, tuned.trainable)  # every process: gathering shards is a collective
    if main:
        save_adapter(run_dir / "adapter", model, tuned.trainable, manifest, state=state)
    if cfg.eval_after and main:
        if cfg.fsdp:
            # generate() reaches sharded modules outside the root forward, so score an unsharded copy.
            del model
            built = unsharded_copy(cfg, run_dir / "adapter", accelerator.device)
        after = run_eager(
            evaluate,
            built,
            test_records,
            max_new_tokens=max_new_tokens,
            seed=cfg.seed,
            out_dir=run_dir,
            dataset=test_source.name,
            split="test",
            progress=progress,
        )
    memory = {**run_config["memory"], "measured_peak_bytes": peak_memory(accelerator.device)}
    if main:
        if before is not None:
            write_json_atomic(run_dir / "scores_before.json", before)
        plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png")
        if resume is None:  # the whole run's measured peak, load included, beside the plan
            write_json_atomic(run_dir / "config.json", {**run_config, "memory": memory})
    accelerator.wait_for_everyone()
    return RunResult(
        run_dir,
        counts,
        position.losses[0] if position.losses else float("nan"),
        float(np.mean(position.losses[-cfg.log_every :])) if position.losses else float("nan"),
        before,
        after,
        time.perf_counter() - started,
        memory,
    )


def enable_checkpointing(model) -> None:
    """Turn on non-reentrant activation checkpointing (transformers 5 renamed the method)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def unsharded_copy(cfg: TrainConfig, adapter: Path, device: torch.device) -> Built:
    """Return the base loaded again with the adapter just saved applied (the one rebuild path), on ``device``."""
    from medtune.tuning.rebuild import rebuild_from_manifest

    built = rebuild_from_manifest(adapter, cfg.model_path, vision_tower=cfg.vision_tower)
    built.model.to(device)
    return built


def shared_run_dir(accelerator: Accelerator, cfg: TrainConfig) -> Path:
    """Return a new run directory made by the main process and shared with every other process."""
    name = [str(new_run_dir(cfg.output_dir, cfg.family, cfg.method)) if accelerator.is_main_process else ""]
    if accelerator.num_processes > 1:
        name = broadcast_object_list(name)
    return Path(name[0])


def diverged_message(loss: float, step: int, run_dir: Path, cfg: TrainConfig) -> str:
    """Return the sentence a NaN/inf loss stops the run with."""
    kept = (
        f"the last good checkpoint is kept in {run_dir / 'checkpoint'}"
        if (run_dir / "checkpoint").exists()
        else "no checkpoint was written yet (--save-every N writes them)"
    )
    return (
        f"loss became {loss} at step {step}; {kept}; lower --lr (now {cfg.lr:g}) or --max-grad-norm "
        f"(now {cfg.max_grad_norm:g}) and start the run again"
    )
