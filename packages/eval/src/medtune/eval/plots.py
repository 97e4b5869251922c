"""Loss curves (the paper's Figure 3) and accuracy-vs-trainable-parameters plots."""

from __future__ import annotations

import itertools
import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

# The object-oriented Figure API needs no pyplot backend, so plotting works headless and never
# changes a caller's matplotlib backend.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter
from matplotlib.transforms import Bbox

from medtune.data.run_files import atomic_path


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
    with atomic_path(out_png) as tmp:  # the training loop redraws loss.png while it runs: never half a file
        fig.savefig(tmp, dpi=120, format=out_png.suffix.lstrip(".") or "png")
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


def _wrap(title: str, width: int) -> str:
    return "\n".join(textwrap.fill(line, width) for line in title.splitlines())


def plot_loss_curves(curves: dict[str, Path], out_png: Path, title: str) -> Path:
    """Return out_png after drawing each labelled run's training loss on one axis (the paper's Figure 3)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for (label, metrics), style in zip(curves.items(), itertools.cycle(["-", "--", "-.", ":"])):
        history = read_loss_history(metrics)
        ax.plot(history.steps, history.losses, style, label=label, linewidth=1.4)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(_wrap(title, 70), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_png)


@dataclass(frozen=True)
class AccuracyPoint:
    """One point of the accuracy-vs-parameters figure: a unique label, x, y, its spread and a colour key."""

    label: str
    trainable: float
    accuracy: float  # percent
    spread: float = 0.0  # percent; drawn as an error bar when above zero
    group: str = ""  # points of one group share a colour (e.g. the method)


def plot_accuracy_vs_params(
    points: list[AccuracyPoint] | list[tuple[str, float, float]], out_png: Path, title: str
) -> Path:
    """Return out_png after plotting global accuracy (%) against trainable parameters (log x), one labelled point each."""
    return _save(accuracy_figure(points, title), Path(out_png))


def accuracy_figure(points: list[AccuracyPoint] | list[tuple[str, float, float]], title: str) -> Figure:
    """Return the accuracy-vs-parameters figure, each point's label placed clear of the others."""
    points = [p if isinstance(p, AccuracyPoint) else AccuracyPoint(*p) for p in points]
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    colours = {g: f"C{i % 10}" for i, g in enumerate(dict.fromkeys(p.group or p.label for p in points))}
    for p in points:
        colour = colours[p.group or p.label]
        ax.errorbar(
            [p.trainable],
            [p.accuracy],
            yerr=[p.spread] if p.spread else None,
            fmt="o",
            color=colour,
            markersize=5,
            capsize=3,
        )
    xs, ys = [p.trainable for p in points], [p.accuracy for p in points]
    ax.set_xscale("log")
    # Room on every side for the labels: a decade either way, and a tenth of the span (at least 5 points).
    ax.set_xlim(min(xs) / 4, max(xs) * 4)
    pad = max(5.0, 0.15 * (max(ys) - min(ys)))
    ax.set_ylim(max(0.0, min(ys) - pad), min(100.0, max(ys) + pad) + 0.01)
    # Decades, and 2x / 5x between them only when fewer than three decades show: every minor label
    # of a wide axis is what crowded it.
    ax.xaxis.set_major_locator(LogLocator(base=10))
    if max(xs) / min(xs) < 50:
        ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(10, 10)))
        ax.tick_params(axis="x", which="minor", labelsize=8)
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("global accuracy (%)")
    ax.set_title(_wrap(title, 80), fontsize=10)
    ax.grid(alpha=0.3, which="major")
    fig.tight_layout()
    _place_labels(fig, ax, points, colours)
    return fig


# Offsets (points) tried in turn for a label, nearest first. A few dozen labels need no optimiser: the
# first offset whose box meets no other label and no marker, inside the axes, is taken.
_OFFSETS = [
    (sx * (6 + 12 * r), sy * (3 + 9 * r) - (9 if sy < 0 else 0))
    for r in range(6)
    for sy in (1, -1)
    for sx in (1, -1)
] + [  # then further out, on leaders, up to the axes' edge: a crowded corner sends labels to open space
    (sx * dx, sy * dy - (9 if sy < 0 else 0))
    for dy in (12, 30, 48, 66, 84, 102)
    for dx in (60, 100, 140, 180)
    for sy in (1, -1)
    for sx in (1, -1)
]


def _place_labels(fig: Figure, ax, points: list[AccuracyPoint], colours: dict[str, str]) -> None:
    renderer = FigureCanvasAgg(fig).get_renderer()
    inside = ax.get_window_extent(renderer)
    low = ax.transData.transform([(p.trainable, p.accuracy - p.spread) for p in points])
    high = ax.transData.transform([(p.trainable, p.accuracy + p.spread) for p in points])
    # The markers and their error bars.
    taken = [Bbox.from_extents(x0 - 4, y0 - 4, x1 + 4, y1 + 4) for (x0, y0), (x1, y1) in zip(low, high)]

    def annotate(p: AccuracyPoint, offset: tuple[int, int], leader: bool = False):
        text = ax.annotate(
            p.label,
            (p.trainable, p.accuracy),
            textcoords="offset points",
            xytext=offset,
            fontsize=7,
            ha="left" if offset[0] >= 0 else "right",
            color=colours[p.group or p.label],
            arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.6} if leader else None,
        )
        # Out of the layout: the tight_layout at save time would otherwise shrink the axes to fit a label
        # near the edge, pulling the markers together under labels placed for the wider axes.
        text.set_in_layout(False)
        return text

    leaders: list[tuple[float, float]] = []  # points along the leader lines drawn so far

    def along(p: AccuracyPoint, box: Bbox) -> list[tuple[float, float]]:
        """Points on the leader from p's marker to the middle of its label's box (the marker end left out)."""
        x0, y0 = ax.transData.transform([(p.trainable, p.accuracy)])[0]
        x1, y1 = box.intervalx.mean(), box.intervaly.mean()
        n = max(12, int(math.hypot(x1 - x0, y1 - y0) / 3))  # every 3 px: a marker's box is 8 px wide
        return [(x0 + (x1 - x0) * t / n, y0 + (y1 - y0) * t / n) for t in range(4, n)]

    def cost(p: AccuracyPoint, box: Bbox, leader: bool) -> int:
        outside = not (inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1))
        crossed = sum(box.contains(x, y) for x, y in leaders)  # a label over an earlier leader
        if leader:  # and a leader over an earlier label or marker
            crossed += sum(any(b.contains(x, y) for x, y in along(p, box)) for b in taken)
        return 3 * sum(box.overlaps(b) for b in taken) + crossed + 10 * outside  # overlaps read worst

    for p in sorted(points, key=lambda q: (q.trainable, q.accuracy)):
        tried = []
        for k, offset in enumerate(_OFFSETS):
            text = annotate(p, offset)
            box = text.get_window_extent(renderer).padded(1)
            text.remove()
            tried.append((cost(p, box, k >= 4), k, offset, box))  # the first four sit beside the marker
            if tried[-1][0] == 0:
                break
        _, k, offset, box = min(tried, key=lambda t: t[0])
        leader = k >= 4
        annotate(p, offset, leader=leader)
        if leader:
            leaders.extend(along(p, box))
        taken.append(box)
