"""The training loop: one plain function you can read top to bottom."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from medtune.core_models import load
from medtune.data import demo_dataset, read_vqa
from medtune.eval import plot_loss
from medtune.tuning.adapter import base_fingerprint, save_adapter
from medtune.tuning.apply import Tuned, apply_paradigm
from medtune.tuning.batches import make_collator
from medtune.tuning.evaluate import evaluate
from medtune.tuning.paradigm import Paradigm
from medtune.tuning.recipes import TrainConfig
from medtune.tuning.run_dir import MetricsLog, new_run_dir, write_json_atomic


@dataclass
class RunResult:
    """What a finished run reports in its closing summary."""

    run_dir: Path
    counts: dict
    first_loss: float
    last_loss: float
    before: dict | None
    after: dict
    seconds: float


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


def train(cfg: TrainConfig, *, progress: bool = True) -> RunResult:
    """Tune ``cfg.preset`` with ``cfg.method`` under ``cfg.paradigm``; evaluate; write the run directory."""
    started = time.perf_counter()
    paradigm = Paradigm.parse(cfg.paradigm, cfg.family)
    source = Path(cfg.dataset).expanduser() if cfg.dataset else demo_dataset("downstream")
    train_records = read_vqa(source, "train")
    test_records = read_vqa(source, "test")
    seed_everything(cfg.seed)
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision="bf16" if cfg.bf16 and torch.cuda.is_available() else "no",
    )
    if cfg.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    built = load(cfg.preset, cfg.model_path)
    built.model.to(accelerator.device)
    run_dir = new_run_dir(cfg.output_dir, cfg.family, cfg.method)
    write_json_atomic(
        run_dir / "config.json",
        {
            **cfg.to_json(),
            "dataset": {"source": str(source), "name": source.name},
            "groups": list(paradigm.groups),
            "base_source": built.source,
        },
    )
    say = accelerator.print
    say(f"run directory: {run_dir}")
    say(f"data: {source} ({len(train_records)} train / {len(test_records)} test questions)")

    before = None
    if cfg.eval_before:
        before = evaluate(
            built, test_records, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, progress=progress
        )
        say(f"before tuning: {format_accuracy(before)}")

    tuned = apply_paradigm(built.model, cfg.family, cfg.method, paradigm, cfg.method_options)
    built.model = tuned.model
    counts = tuned.counts()
    write_json_atomic(
        run_dir / "config.json",
        {
            **cfg.to_json(),
            "dataset": {"source": str(source), "name": source.name},
            "groups": list(paradigm.groups),
            "base_source": built.source,
            "params": {
                "total": counts["total_params"],
                "trainable": counts["trainable_params"],
                "peft": counts["peft_params"],
                "groups": counts["groups"],
            },
        },
    )
    say(
        f"{cfg.method} under {paradigm}: {counts['trainable_params']:,} of {counts['total_params']:,} parameters "
        f"train ({100 * counts['trainable_ratio']:.4f}%)"
    )
    fingerprint = base_fingerprint(tuned.model, exclude=tuned.trainable)

    loader = DataLoader(
        train_records,
        batch_size=cfg.batch_size,
        shuffle=True,
        collate_fn=make_collator(built, train=True),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(param_groups(tuned, cfg.weight_decay), lr=cfg.lr)
    scheduler = get_scheduler(
        cfg.scheduler,
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(tuned.model, optimizer, loader, scheduler)
    trainable = [p for p in model.parameters() if p.requires_grad]

    metrics = MetricsLog(run_dir / "metrics.jsonl")
    losses: list[float] = []
    step, tokens, window_start = 0, 0, time.perf_counter()
    bar = tqdm(total=total_steps, desc=f"{cfg.method} tuning", unit="step", disable=not progress)
    model.train()
    while step < total_steps:
        for batch in loader:
            with accelerator.accumulate(model):
                qids = batch.pop("qids", None)  # noqa: F841  (bookkeeping only)
                loss = model(**batch).loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss became {loss.item()} at step {step + 1}; lower --lr (now {cfg.lr}) or --max-grad-norm"
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            if not accelerator.sync_gradients:
                continue
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if step % cfg.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                metrics.write(
                    step=step,
                    epoch=step / steps_per_epoch,
                    loss=float(np.mean(losses[-cfg.log_every :])),
                    lr=scheduler.get_last_lr()[0],
                    seconds=time.perf_counter() - started,
                    tokens_per_s=tokens / max(elapsed, 1e-9),
                )
                tokens, window_start = 0, time.perf_counter()
            if step >= total_steps:
                break
    bar.close()
    metrics.close()

    model = accelerator.unwrap_model(model)
    built.model = model
    save_adapter(
        run_dir / "adapter",
        model,
        tuned.trainable,
        {
            "preset": cfg.preset,
            "family": cfg.family,
            "method": cfg.method,
            "paradigm": str(paradigm),
            "base_fingerprint": fingerprint,
            "base_source": built.source,
            "method_details": tuned.details,
        },
    )
    after = evaluate(
        built,
        test_records,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        out_dir=run_dir,
        dataset=source.name,
        split="test",
        progress=progress,
    )
    if before is not None:
        write_json_atomic(run_dir / "scores_before.json", before)
    plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png")
    return RunResult(
        run_dir,
        counts,
        losses[0],
        float(np.mean(losses[-cfg.log_every :])),
        before,
        after,
        time.perf_counter() - started,
    )


def format_accuracy(scores: dict) -> str:
    """Return 'open 41.2% | closed 77.0% | global 62.5%'."""
    return " | ".join(f"{k} {100 * scores[k]:.1f}%" for k in ("open", "closed", "global"))
