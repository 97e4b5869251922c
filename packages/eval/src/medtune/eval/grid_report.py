"""A grid's tables (each method and paradigm at its chosen rate, mean and spread over seeds) and figures."""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from medtune.data.run_files import PREDICTIONS, write_text_atomic
from medtune.eval.plots import AccuracyPoint, plot_accuracy_vs_params, plot_loss_curves
from medtune.eval.report import METRIC_COLUMNS, Column, _is_number, _pretty, _raw, _variant_notes
from medtune.eval.runs import GROUP_DISPLAY, RunRow

SELECTED_BY = {"val_loss": "validation loss", "val_accuracy": "validation accuracy"}


@dataclass
class GridEntry:
    """A method under a paradigm at one learning rate: its rows on one evaluation set, one per seed."""

    method: str
    paradigm: list[str]
    lr: float
    selected: bool  # the rate chosen on validation (always True without a sweep)
    rows: list[RunRow]

    @property
    def label(self) -> str:
        return f"{self.method} [{','.join(self.paradigm)}] lr {self.lr:g}"

    def stats(self, column: Column) -> tuple[float | None, float | None]:
        """Return (mean, sample standard deviation or None) of ``column`` over the seeds that have it."""
        values = [v for v in (column.value(r) for r in self.rows) if _is_number(v)]
        if not values:
            return None, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


@dataclass
class GridTable:
    """One evaluation set on one preset: every entry of the grid, the chosen ones forming the table."""

    title: str
    role: str
    preset: str
    entries: list[GridEntry]
    selected_by: str | None  # None: one rate per method, nothing was chosen

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.title).strip("_")

    @property
    def chosen(self) -> list[GridEntry]:
        return [e for e in self.entries if e.selected]

    def rates(self, entry: GridEntry) -> list[float]:
        return sorted(e.lr for e in self.entries if e.method == entry.method and e.paradigm == entry.paradigm)

    def columns(self) -> list[Column]:
        rows = [r for e in self.entries for r in e.rows]
        return [c for c in METRIC_COLUMNS if any(_is_number(c.value(r)) for r in rows)]


def leaders(table: GridTable) -> tuple[str, list[tuple[GridEntry, float]]]:
    """Return the table's headline metric (global accuracy, else METEOR) and its chosen entries by it, best first."""
    columns = {c.header: c for c in table.columns()}
    column = columns.get("Global (%)") or columns.get("METEOR (%)")
    if column is None:
        return "", []
    ranked = [(e, e.stats(column)[0]) for e in table.chosen]
    return column.header, sorted(((e, 100 * v) for e, v in ranked if v is not None), key=lambda t: -t[1])


def closed_majority(rows: list[RunRow]) -> tuple[str, float, int] | None:
    """Return (answer, share, count) of the commonest closed answer in a row's predictions.jsonl, if any."""
    for row in rows:
        path = row.run_dir / row.label.split("/", 1)[-1] / PREDICTIONS if "/" in row.label else None
        if path is None or not path.is_file():
            continue
        answers = [
            str(r.get("answer", "")).strip().lower()
            for r in map(json.loads, filter(str.strip, path.read_text().splitlines()))
            if str(r.get("answer_type", "")).strip().upper() == "CLOSED"
        ]
        if answers:
            answer, count = Counter(answers).most_common(1)[0]
            return answer, count / len(answers), len(answers)
    return None


def _cell(mean: float | None, sd: float | None, kind: str) -> str:
    text = _pretty(mean, kind)
    return text if sd is None or kind == "int" else f"{text} ± {_pretty(sd, kind)}"


def _header(table: GridTable) -> list[str]:
    groups = [GROUP_DISPLAY.get(g, g) for g in table.entries[0].rows[0].groups]
    return ["Method", *groups, "LR", "Seeds"]


def _lead(table: GridTable, entry: GridEntry) -> list[str]:
    rates = table.rates(entry)
    lr = f"{entry.lr:g}" + (f" (of {', '.join(f'{r:g}' for r in rates)})" if len(rates) > 1 else "")
    return [entry.method, *entry.rows[0].group_states(), lr, str(len(entry.rows))]


def grid_markdown(table: GridTable) -> str:
    """Return the table of chosen entries as Markdown, mean ± spread over seeds, with its notes."""
    columns = table.columns()
    majority = closed_majority([r for e in table.entries for r in e.rows])
    headers = [c.header for c in columns]
    if majority and "Closed (%)" in headers:
        headers.insert(headers.index("Closed (%)") + 1, "Closed majority (%)")
    header = _header(table) + headers
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in table.chosen:
        cells = [_cell(*entry.stats(c), c.kind) for c in columns]
        if majority and "Closed (%)" in headers:
            cells.insert(headers.index("Closed majority (%)"), f"{100 * majority[1]:.2f}")
        lines.append("| " + " | ".join(_lead(table, entry) + cells) + " |")
    notes = []
    if table.selected_by:
        notes.append(
            f"LR: each method's rate under each paradigm was chosen by the mean {SELECTED_BY[table.selected_by]} "
            "over seeds on the training set's validation split, among the rates in brackets; no test split was "
            "read to choose it"
        )
    if any(len(e.rows) > 1 for e in table.chosen):
        notes.append("several seeds: mean ± sample standard deviation")
    if majority:
        notes.append(
            f"Closed majority: always answering {majority[0]!r} scores {100 * majority[1]:.2f}% "
            f"of the {majority[2]} closed questions"
        )
    variants = _variant_notes([r for e in table.chosen for r in e.rows])
    body = "\n".join(lines) + "\n"
    if notes:
        body += "\n" + ". ".join(notes) + ".\n"
    return body + (f"\n{variants}\n" if variants else "")


def grid_csv(table: GridTable, entries: list[GridEntry]) -> str:
    """Return entries as CSV: unformatted means, and a standard-deviation column beside each metric."""
    columns = table.columns()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    groups = [GROUP_DISPLAY.get(g, g) for g in table.entries[0].rows[0].groups]
    head = ["Method", *groups, "LR", "Selected", "Seeds"]
    writer.writerow(head + [h for c in columns for h in (c.header, f"{c.header} sd")])
    for entry in entries:
        values = []
        for c in columns:
            mean, sd = entry.stats(c)
            values += [_raw(mean, c.kind), _raw(sd, c.kind)]
        lead = [entry.method, *entry.rows[0].group_states(), f"{entry.lr:g}", entry.selected, len(entry.rows)]
        writer.writerow(lead + values)
    return buffer.getvalue()


def _figures(table: GridTable, folder: Path) -> list[Path]:
    written = []
    points = []
    for entry in table.entries:
        trainable = entry.rows[0].params.get("trainable")
        mean, sd = entry.stats(Column("Global", lambda r: r.scores.get("global"), "pct"))
        if _is_number(trainable) and trainable > 0 and mean is not None:
            points.append(
                AccuracyPoint(entry.label, float(trainable), 100 * mean, 100 * (sd or 0.0), entry.method)
            )
    if points:
        title = f"Global accuracy vs trainable parameters\n{table.title}"
        written.append(plot_accuracy_vs_params(points, folder / "accuracy_vs_params.png", title))
    if table.role == "in-distribution":
        for paradigm in dict.fromkeys(",".join(e.paradigm) for e in table.chosen):
            curves = {
                f"{e.method} lr {e.lr:g}": e.rows[0].metrics_path
                for e in table.chosen
                if ",".join(e.paradigm) == paradigm and e.rows[0].metrics_path is not None
            }
            if curves:
                name = f"loss_curves_{paradigm.replace(',', '-')}.png"
                title = f"Training loss under [{paradigm}]\n{table.preset}"
                written.append(plot_loss_curves(curves, folder / name, title))
    return written


def write_grid_report(tables: list[GridTable], out_dir: Path, name: str) -> list[Path]:
    """Return the files written: report.md, and per table table.md, table.csv, cells.csv and its figures."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    sections = [f"# medtune grid: {name}", ""]
    for table in tables:
        if not table.entries:
            sections += [f"## {table.title}", "", "No cell has scores on this set yet.", ""]
            continue
        folder = out_dir / table.slug
        folder.mkdir(parents=True, exist_ok=True)
        markdown = grid_markdown(table)
        files = {
            "table.md": f"## {table.title}\n\n{markdown}",
            "table.csv": grid_csv(table, table.chosen),
            "cells.csv": grid_csv(table, table.entries),
        }
        for file, text in files.items():
            written.append(write_text_atomic(folder / file, text))
        figures = _figures(table, folder)
        written += figures
        sections += [
            f"## {table.title}",
            "",
            markdown,
            f"Every cell: [{table.slug}/cells.csv]({table.slug}/cells.csv)",
            "",
        ]
        sections += [f"![{p.stem}]({table.slug}/{p.name})" for p in figures] + [""]
    report = out_dir / "report.md"
    report.write_text("\n".join(sections))
    return [report, *written]
