"""The training loop: set up, step, finish, as one plain function you can read top to bottom."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medtune.core_models import Built
from medtune.data.run_files import ADAPTER, BEST, CHECKPOINT, CONFIG, LOSS_PLOT, METRICS, SCORES_BEFORE
from medtune.data.workers import raise_carried
from medtune.eval import plot_loss
from medtune.tuning.adapter import save_adapter, tuned_state
from medtune.tuning.checkpoint import save_checkpoint
from medtune.tuning.evaluate import evaluate, validation_loss
from medtune.tuning.fast_path import run_eager
from medtune.tuning.fsdp import skip_gradient_sync
from medtune.tuning.loading import peak_memory
from medtune.tuning.loss import model_loss
from medtune.tuning.recipes import TrainConfig
from medtune.tuning.run_dir import MetricsLog, write_json_atomic
from medtune.tuning.shards import real_rows, weight_padding
from medtune.tuning.trackers import Trackers, start_trackers
from medtune.tuning.train_setup import Run, set_up


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
    main_process: bool = True  # False on a distributed run's other processes, which score nothing


def training_step(
    model: torch.nn.Module,
    batch: dict,
    *,
    weight: float = 1.0,
    accumulation: int = 1,
    backward: Callable[[torch.Tensor], None] | None = None,
    diverged: Callable[[float], str] | None = None,
    autocast: torch.autocast | None = None,
) -> torch.Tensor:
    """Run one micro-batch forward and backward; return its mean loss (detached, as the model computed it).

    The backward pass sees ``loss * weight / accumulation``: ``accumulation`` micro-batches add up to one
    optimizer step, and ``weight`` is a data-parallel process's share of the step's label tokens.
    ``backward`` is the accelerator's where there is one; ``autocast`` wraps the forward pass alone. With
    ``diverged``, a NaN or infinite loss raises FloatingPointError with the sentence it returns, before backward.
    """
    with autocast or contextlib.nullcontext():
        loss = model_loss(model, batch)
    if diverged is not None and not torch.isfinite(loss):
        raise FloatingPointError(diverged(loss.item()))
    # Unscaled, the graph gains no ops: a benchmark's step is the model's alone.
    scaled = loss if weight == 1.0 and accumulation == 1 else loss * weight / accumulation
    (backward or torch.Tensor.backward)(scaled)
    return loss.detach()


def train(cfg: TrainConfig, *, progress: bool = True, resume: Path | None = None) -> RunResult:
    """Tune ``cfg.preset`` with ``cfg.method`` under ``cfg.paradigm``; evaluate; write the run directory.

    With ``resume``, continue that run directory from its last checkpoint (same configuration only).
    """
    started = time.perf_counter()
    run = set_up(cfg, resume=resume, progress=progress)
    cfg, accelerator, position, model = run.cfg, run.accelerator, run.position, run.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    log = StepLog.open(run, progress)
    model.train()
    while position.step < run.total_steps:
        run.sampler.start(
            position.epoch, position.batch_in_epoch * cfg.batch_size * accelerator.num_processes
        )
        step_loss, first, samples = 0.0, position.batch_in_epoch, len(run.sampler)
        for micro, batch in enumerate(run.loader, start=position.batch_in_epoch):
            batch = raise_carried(batch)
            batch.pop("qids", None)
            # Several processes: the last round's top-up repeats get no labels, and each process's mean loss
            # counts by its label tokens, so the step equals one process's at the whole round's batch.
            real = real_rows(
                micro - first, samples, cfg.batch_size, accelerator.process_index, accelerator.num_processes
            )
            share = weight_padding(batch, real, accelerator)
            group_start = micro - micro % cfg.grad_accum
            in_step = min(cfg.grad_accum, run.micro_per_epoch - group_start)
            ends_step = micro + 1 == group_start + in_step
            with skip_gradient_sync(model, accelerator, skip=not ends_step):
                loss = training_step(
                    model,
                    batch,
                    weight=share,
                    accumulation=in_step,
                    backward=accelerator.backward,
                    diverged=lambda value: diverged_message(value, position.step + 1, run.run_dir, cfg),
                )
            step_loss += loss.item() * share / in_step
            log.tokens += int(batch["attention_mask"].sum())
            position.batch_in_epoch = micro + 1
            if not ends_step:
                continue
            accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            position.step += 1
            if position.batch_in_epoch == run.micro_per_epoch:
                position.epoch, position.batch_in_epoch = position.epoch + 1, 0
            mean_loss = accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "mean")
            position.losses.append(mean_loss.item())
            step_loss = 0.0
            log.step(run, started)
            if cfg.eval_every and (position.step % cfg.eval_every == 0 or position.step == run.total_steps):
                validate(run, log)
            if run.main and cfg.save_every and position.step % cfg.save_every == 0:
                save_checkpoint(
                    run.run_dir,
                    model=accelerator.unwrap_model(model),
                    names=run.tuned.trainable,
                    optimizer=run.optimizer,
                    scheduler=run.scheduler,
                    position=position,
                )
            if position.step >= run.total_steps:
                break
    log.close()
    return finish(run, started, progress)


@dataclass
class StepLog:
    """Where the loop reports: the progress bar, and on the main process metrics.jsonl and the trackers."""

    bar: tqdm
    metrics: MetricsLog | None
    board: Trackers | None
    tokens: int = 0  # attention-mask tokens since the last logged row
    since: float = field(default_factory=time.perf_counter)

    @classmethod
    def open(cls, run: Run, progress: bool) -> StepLog:
        """Return the run's log, appending to its metrics.jsonl (a resumed run's was cut back to its step)."""
        metrics = MetricsLog(run.run_dir / METRICS) if run.main else None
        board = start_trackers(run.cfg.report_to, run.run_dir, run.run_config) if run.main else None
        bar = tqdm(
            total=run.total_steps,
            initial=run.position.step,
            desc=f"{run.cfg.method} tuning",
            unit="step",
            disable=not progress or not run.main,
        )
        return cls(bar, metrics, board)

    def step(self, run: Run, started: float) -> None:
        """Advance the bar; every --log-every steps, write a metrics row and restart the throughput window."""
        position, cfg, accelerator = run.position, run.cfg, run.accelerator
        tokens = accelerator.reduce(torch.tensor(self.tokens, device=accelerator.device), "sum").item()
        tokens_per_s = tokens / max(time.perf_counter() - self.since, 1e-9)
        lr = run.scheduler.get_last_lr()[0]
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{position.losses[-1]:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")
        if position.step % cfg.log_every and position.step != run.total_steps:
            return
        if self.metrics is not None:
            row = {
                "step": position.step,
                "epoch": position.step / run.steps_per_epoch,
                "loss": float(np.mean(position.losses[-cfg.log_every :])),
                "lr": lr,
                "seconds": time.perf_counter() - started,
                "tokens_per_s": tokens_per_s,
            }
            self.metrics.write(**row)
            if self.board is not None:
                self.board.log({f"train/{k}": row[k] for k in ("loss", "lr", "tokens_per_s")}, position.step)
        # Every process restarts its window, so the summed rate covers the same seconds on each.
        self.tokens, self.since = 0, time.perf_counter()

    def validation(self, step: int, val_loss: float) -> None:
        """Write a validation row (main process)."""
        self.metrics.write(step=step, val_loss=val_loss)
        if self.board is not None:
            self.board.log({"validation/loss": val_loss}, step)

    def close(self) -> None:
        """Close the bar, metrics.jsonl and the trackers."""
        self.bar.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.board is not None:
            self.board.close()


def validate(run: Run, log: StepLog) -> None:
    """Compute the validation loss; keep the best adapter so far under best/ and redraw the loss curve."""
    position, built = run.position, run.built
    built.model = run.accelerator.unwrap_model(run.model)
    val_loss = run_eager(validation_loss, built, run.data.validation, batch_size=4 * run.cfg.batch_size)
    best = position.best_val_loss is None or val_loss < position.best_val_loss
    if best:
        position.best_val_loss = val_loss
    # Gathering sharded tensors is a collective, so every process takes part.
    best_state = tuned_state(built.model, run.tuned.trainable) if best else None
    if not run.main:  # every process computed the same validation loss; it is said and saved once
        return
    log.validation(position.step, val_loss)
    if best:
        manifest = {**run.manifest, "step": position.step, "val_loss": val_loss}
        save_adapter(run.run_dir / BEST, built.model, run.tuned.trainable, manifest, state=best_state)
    plot_loss(run.run_dir / METRICS, run.run_dir / LOSS_PLOT)
    log.bar.write(f"step {position.step}: validation loss {val_loss:.4f}{' (best)' if best else ''}")


def finish(run: Run, started: float, progress: bool) -> RunResult:
    """Save the adapter, score the tuned model, write the run's closing files; return the summary."""
    cfg, accelerator, run_dir, losses = run.cfg, run.accelerator, run.run_dir, run.position.losses
    model = accelerator.unwrap_model(run.model)
    built = run.built
    built.model = model
    after = None
    state = tuned_state(model, run.tuned.trainable)  # every process: gathering shards is a collective
    if run.main:
        save_adapter(run_dir / ADAPTER, model, run.tuned.trainable, run.manifest, state=state)
    if cfg.eval_after and run.main:
        # generate() reaches sharded modules outside the root forward, so a sharded run scores an unsharded copy.
        scored = unsharded_copy(cfg, run_dir / ADAPTER, accelerator.device) if cfg.fsdp else built
        after = run_eager(
            evaluate,
            scored,
            run.data.test,
            max_new_tokens=run.data.max_new_tokens,
            seed=cfg.seed,
            out_dir=run_dir,
            dataset=run.data.test_source.name,
            split="test",
            progress=progress,
        )
    memory = {**run.run_config["memory"], "measured_peak_bytes": peak_memory(accelerator.device)}
    if run.main:
        if run.before is not None:
            write_json_atomic(run_dir / SCORES_BEFORE, run.before)
        plot_loss(run_dir / METRICS, run_dir / LOSS_PLOT)
        if not run.resumed:  # the whole run's measured peak, load included, beside the plan
            write_json_atomic(run_dir / CONFIG, {**run.run_config, "memory": memory})
    accelerator.wait_for_everyone()
    return RunResult(
        run_dir,
        run.counts,
        losses[0] if losses else float("nan"),
        float(np.mean(losses[-cfg.log_every :])) if losses else float("nan"),
        run.before,
        after,
        time.perf_counter() - started,
        memory,
        main_process=run.main,
    )


def unsharded_copy(cfg: TrainConfig, adapter: Path, device: torch.device) -> Built:
    """Return the base loaded again with the adapter just saved applied (the one rebuild path), on ``device``."""
    from medtune.tuning.rebuild import rebuild_from_manifest

    built = rebuild_from_manifest(adapter, cfg.model_path, vision_tower=cfg.vision_tower)
    built.model.to(device)
    return built


def diverged_message(loss: float, step: int, run_dir: Path, cfg: TrainConfig) -> str:
    """Return the sentence a NaN/inf loss stops the run with."""
    kept = (
        f"the last good checkpoint is kept in {run_dir / CHECKPOINT}"
        if (run_dir / CHECKPOINT).exists()
        else "no checkpoint was written yet (--save-every N writes them)"
    )
    return (
        f"loss became {loss} at step {step}; {kept}; lower --lr (now {cfg.lr:g}) or --max-grad-norm "
        f"(now {cfg.max_grad_norm:g}) and start the run again"
    )
