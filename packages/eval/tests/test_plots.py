"""The accuracy-vs-parameters figure: every point labelled once, no two labels on top of each other."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from medtune.eval.plots import AccuracyPoint, accuracy_figure, plot_accuracy_vs_params


def crowded_points() -> list[AccuracyPoint]:
    """Return the points that overprinted before: ffn beside full, ln/prefix/lora stacked at one accuracy."""
    points = []
    for method, trainable, accuracy in [
        ("full", 2.2e6, 69.5),
        ("ffn", 1.9e6, 68.8),
        ("attention", 1.1e6, 67.6),
        ("lora", 4.0e4, 61.0),
        ("prefix", 3.0e4, 61.0),
        ("ln", 1.7e3, 61.0),
    ]:
        for lr in (1e-3, 3e-3):
            points.append(
                AccuracyPoint(f"{method} [F,F,PEFT,F] lr {lr:g}", trainable, accuracy + lr * 100, 0.5, method)
            )
    return points


def demo_grid_points() -> list[AccuracyPoint]:
    """Return the demo grid's 14 LLaVA cells, which crowd one corner: labels there overprinted."""
    cells = [  # as the grid's table.csv holds them: the placement is sensitive to the last digit
        ("ln [PEFT,F,PEFT,F]", 3264, 69.8606),
        ("ln [F,F,PEFT,F]", 1728, 70.7317),
        ("ln [PEFT,T,PEFT,T]", 85440, 68.9895),
        ("ln [F,T,PEFT,T]", 83904, 74.3902),
        ("attention [PEFT,F,PEFT,F]", 701568, 73.8676),
        ("attention [F,F,PEFT,F]", 589824, 71.7770),
        ("attention [PEFT,T,PEFT,T]", 783744, 78.0488),
        ("attention [F,T,PEFT,T]", 672000, 75.2613),
        ("ffn [F,F,PEFT,F]", 1179648, 77.0035),
        ("ffn [F,T,PEFT,T]", 1261824, 78.7456),
        ("lora [F,F,PEFT,F]", 58368, 77.5261),
        ("lora [F,T,PEFT,T]", 140544, 78.5714),
        ("prefix [F,F,PEFT,F]", 334464, 57.4913),
        ("prefix [F,T,PEFT,T]", 416640, 64.1115),
    ]
    lrs = {"ln": 0.01, "attention": 0.001, "ffn": 0.001, "lora": 0.003, "prefix": 0.01}
    return [
        AccuracyPoint(f"{label} lr {lrs[label.split()[0]]:g}", n, acc, 0.0, label.split()[0])
        for label, n, acc in cells
    ]


@pytest.mark.parametrize("points", [crowded_points(), demo_grid_points()], ids=["stacked", "demo-grid"])
def test_each_point_has_one_label_and_labels_do_not_overlap(points):
    fig = accuracy_figure(
        points, "Global accuracy vs trainable parameters\na long table title that must still fit"
    )
    fig.tight_layout()  # as saving does, after the labels are placed
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # places each annotation at its offset
    renderer = canvas.get_renderer()
    (ax,) = fig.axes
    texts = [t for t in ax.texts]
    assert sorted(t.get_text() for t in texts) == sorted(p.label for p in points)
    boxes = [Text.get_window_extent(t, renderer) for t in texts]  # the words, not their leader lines
    overlapping = [
        (a, b) for (a, ba), (b, bb) in itertools.combinations(zip(texts, boxes), 2) if ba.overlaps(bb)
    ]
    assert not overlapping, [(a.get_text(), b.get_text()) for a, b in overlapping]
    title = ax.title.get_window_extent(renderer)
    assert title.x0 >= 0 and title.x1 <= fig.bbox.width  # the title is not cut at either side


def test_old_style_tuples_still_plot(tmp_path):
    out = plot_accuracy_vs_params([("ln", 1728.0, 40.8), ("lora", 6e4, 71.3)], tmp_path / "a.png", "t")
    assert out.stat().st_size > 0
