"""Loss curves (the paper's Figure 3) and accuracy-vs-trainable-parameters plots."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# The object-oriented Figure API needs no pyplot backend, so plotting works headless and never
# changes a caller's matplotlib backend.
from matplotlib.figure import Figure


@dataclass
class LossHistory:
    """Training loss per step and validation loss per step, read from metrics.jsonl."""

    steps: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_steps: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)


def read_loss_history(metrics_jsonl: Path | str) -> LossHistory:
    """Return the `loss` and `val_loss` lines of a metrics.jsonl file by step."""
    path = Path(metrics_jsonl)
    if not path.is_file():
        raise FileNotFoundError(f"No metrics file at {path}; the training loop writes it as it logs.")
    history = LossHistory()
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {line_no} is not valid JSON ({error.msg}).") from None
            step = record.get("step", len(history.steps) + len(history.val_steps))
            if record.get("loss") is not None:
                history.steps.append(float(step))
                history.losses.append(float(record["loss"]))
            if record.get("val_loss") is not None:
                history.val_steps.append(float(step))
                history.val_losses.append(float(record["val_loss"]))
    return history


def _save(fig: Figure, out_png: Path) -> Path:
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = out_png.with_name(out_png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(out_png)  # the training loop redraws loss.png while it runs; never leave half a file
    return out_png


def plot_loss(metrics_jsonl: Path | str, out_png: Path | str, title: str | None = None) -> Path:
    """Return out_png after drawing one run's training (and validation) loss against the step."""
    history = read_loss_history(metrics_jsonl)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(history.steps, history.losses, label="train loss", linewidth=1.2)
    if history.val_losses:
        ax.plot(history.val_steps, history.val_losses, "o-", label="validation loss", markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or Path(metrics_jsonl).parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, Path(out_png))


def plot_loss_curves(curves: dict[str, Path], out_png: Path, title: str) -> Path:
    """Return out_png after drawing each labelled run's training loss on one axis (the paper's Figure 3)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for label, metrics in curves.items():
        history = read_loss_history(metrics)
        ax.plot(history.steps, history.losses, label=label, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_accuracy_vs_params(points: list[tuple[str, float, float]], out_png: Path, title: str) -> Path:
    """Return out_png after plotting global accuracy (%) against trainable parameters (log x) per label."""
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    for label, trainable, accuracy in points:
        ax.scatter([trainable], [accuracy], s=30)
        ax.annotate(label, (trainable, accuracy), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("global accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, out_png)
