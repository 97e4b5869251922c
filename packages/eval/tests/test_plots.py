"""The accuracy-vs-parameters figure: every point labelled once, no two labels on top of each other."""

from __future__ import annotations

import itertools

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


def test_each_point_has_one_label_and_labels_do_not_overlap():
    points = crowded_points()
    fig = accuracy_figure(
        points, "Global accuracy vs trainable parameters\na long table title that must still fit"
    )
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
