"""The paper's tables (Markdown + CSV) and figures from a set of run directories."""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtune.data.run_files import write_text_atomic
from medtune.eval.plots import AccuracyPoint, plot_accuracy_vs_params, plot_loss_curves
from medtune.eval.runs import GROUP_DISPLAY, RunRow, load_runs


@dataclass(frozen=True)
class Column:
    """A metric column: header, how to read its value from a row, and how to print it."""

    header: str
    value: Callable[[RunRow], Any]
    kind: str  # "pct" (fraction shown as %), "num", "int", "ratio" (already in %)


# The two VQA scorer variants a scores.json may carry beside its top-level (default) numbers.
SCORER_VARIANTS = ("llava-med", "medtune")


def variant_score(scores: dict, key: str, variant: str | None = None) -> Any:
    """Return ``key`` of one scorer variant (``scores["variants"][v]`` or ``scores[v]``), or the top-level value."""
    if variant is None:
        return scores.get(key)
    for holder in (scores.get("variants"), scores):
        block = holder.get(variant) if isinstance(holder, dict) else None
        if isinstance(block, dict):
            return block.get(key)
    return None


def _score(key: str, variant: str | None = None) -> Callable[[RunRow], Any]:
    return lambda row: variant_score(row.scores, key, variant)


def _ratio(numerator: str) -> Callable[[RunRow], Any]:
    def value(row: RunRow) -> float | None:
        total, part = row.params.get("total"), _param(numerator)(row)
        return None if not total or part is None else 100.0 * part / total

    return value


def _peft_ratio(row: RunRow) -> float | None:
    # The paper's "#PEFT Params" is relative to the groups tuned with the method (Table 1: LN-tuning's
    # 115,200 is 0.04% of JTM + DEC), which needs the per-group sizes `medtune params` reports.
    peft, groups = _param("peft")(row), row.params.get("groups")
    if peft is None or not isinstance(groups, dict):
        return None
    tuned = [g for g, state in zip(row.groups, row.paradigm) if state.upper() == "PEFT"]
    sizes = [groups.get(g, {}).get("params") if isinstance(groups.get(g), dict) else None for g in tuned]
    if not tuned or not all(_is_number(size) for size in sizes) or sum(sizes) == 0:
        return None
    return 100.0 * peft / sum(sizes)


def _param(key: str) -> Callable[[RunRow], Any]:
    # Full fine-tuning has no PEFT parameters; the paper prints "-" there rather than 0.
    def value(row: RunRow) -> Any:
        if key == "peft" and row.method == "full":
            return None
        return row.params.get(key)

    return value


# The paper's metric columns, in its order (Tables 1-5), with the strict variant beside global.
METRIC_COLUMNS = (
    Column("Opened (%)", _score("open"), "pct"),
    Column("Closed (%)", _score("closed"), "pct"),
    Column("Global (%)", _score("global"), "pct"),
    Column("Global exact (%)", _score("global_exact"), "pct"),
    *(
        Column(f"{name} (%) {variant}", _score(key, variant), "pct")
        for variant in SCORER_VARIANTS
        for name, key in (("Opened", "open"), ("Closed", "closed"), ("Global", "global"))
    ),
    Column("BERTScore P (%)", _score("bertscore_precision"), "pct"),
    Column("BERTScore R (%)", _score("bertscore_recall"), "pct"),
    Column("BERTScore F1 (%)", _score("bertscore_f1"), "pct"),
    Column("METEOR (%)", _score("meteor"), "pct"),
    Column("ROUGE-L R (%)", _score("rougeL_recall"), "pct"),
    Column("ROUGE-L P (%)", _score("rougeL_precision"), "pct"),
    Column("ROUGE-L F1 (%)", _score("rougeL_f1"), "pct"),
    Column("Mean Token", _score("mean_tokens"), "num"),
    Column("Trainable Params", _param("trainable"), "int"),
    Column("#Params (%)", _ratio("trainable"), "ratio"),
    Column("PEFT Params", _param("peft"), "int"),
    Column("#PEFT Params (%)", _peft_ratio, "ratio"),
)


@dataclass
class Table:
    """Rows sharing a dataset, split and preset, with the columns that any of them has."""

    dataset: str
    split: str
    preset: str
    rows: list[RunRow]

    @property
    def title(self) -> str:
        return f"{self.dataset} ({self.split}), preset {self.preset}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.dataset}-{self.split}-{self.preset}")

    def columns(self) -> list[Column]:
        return [c for c in METRIC_COLUMNS if any(_is_number(c.value(row)) for row in self.rows)]

    def group_headers(self) -> list[str]:
        return [GROUP_DISPLAY.get(g, g) for g in self.rows[0].groups]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _pretty(value: Any, kind: str) -> str:
    if not _is_number(value):
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "ratio":
        # Ratios such as LN-tuning's 0.00372% need significant digits, not two decimals.
        return f"{value:.2f}" if value >= 0.1 else f"{value:.3g}"
    return f"{value:.2f}"


def _raw(value: Any, kind: str) -> str:
    if not _is_number(value):
        return ""
    if kind == "pct":
        return f"{100 * value:.4f}"
    if kind == "int":
        return str(int(value))
    return f"{value:.6g}"


def group_tables(rows: list[RunRow]) -> list[Table]:
    """Return the rows split into tables by (dataset, split, preset), in first-seen order."""
    tables: dict[tuple[str, str, str], Table] = {}
    for row in rows:
        key = (row.dataset, row.split, row.preset)
        tables.setdefault(key, Table(*key, rows=[])).rows.append(row)
    return list(tables.values())


def table_markdown(table: Table) -> str:
    """Return the table as Markdown with a notes line naming each score's variant."""
    columns = table.columns()
    header = ["Run", *table.group_headers(), *(c.header for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        cells = [row.label, *row.group_states(), *(_pretty(c.value(row), c.kind) for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = _variant_notes(table.rows)
    return "\n".join(lines) + ("\n\n" + notes if notes else "") + "\n"


def table_csv(table: Table) -> str:
    """Return the table as CSV with unformatted numbers (percentages as numbers, empty where absent)."""
    columns = table.columns()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Run", *table.group_headers(), *(c.header for c in columns)])
    for row in table.rows:
        writer.writerow([row.label, *row.group_states(), *(_raw(c.value(row), c.kind) for c in columns)])
    return buffer.getvalue()


def _variant_notes(rows: list[RunRow]) -> str:
    notes = []
    for key, name in (
        ("scorer_version", "VQA scorer"),
        ("meteor_variant", "METEOR matching"),
        ("mean_tokens_unit", "mean tokens counted with"),
        ("bertscore_model", "BERTScore encoder"),
        ("bertscore_skipped", "BERTScore skipped"),
    ):
        values = sorted({str(row.scores[key]) for row in rows if row.scores.get(key) not in (None, "")})
        if values:
            notes.append(f"{name}: {'; '.join(values)}")
    return "Notes: " + ". ".join(notes) + "." if notes else ""


def _run_labels(rows: list[RunRow]) -> list[str]:
    """Return one label per row, method + paradigm + rate, with the run's name where that is not unique."""
    labels = [
        f"{r.method} [{','.join(r.paradigm)}]" + (f" lr {r.lr:g}" if r.lr is not None else "") for r in rows
    ]
    counts = {label: labels.count(label) for label in labels}
    return [label if counts[label] == 1 else f"{label} {r.run_dir.name}" for label, r in zip(labels, rows)]


def _figures(table: Table, folder: Path) -> tuple[list[Path], list[str]]:
    written, notes = [], []
    curves: dict[str, Path] = {}
    for row, label in zip(table.rows, _run_labels(table.rows)):
        if row.metrics_path is None or row.run_dir in {p.parent for p in curves.values()}:
            continue
        curves[label] = row.metrics_path
    if curves:
        written.append(plot_loss_curves(curves, folder / "loss_curves.png", f"Training loss: {table.title}"))
    else:
        notes.append("No run in this table has a metrics.jsonl, so there is no loss-curve figure.")
    points = [
        AccuracyPoint(
            label, float(row.params["trainable"]), 100.0 * float(row.scores["global"]), group=row.method
        )
        for row, label in zip(table.rows, _run_labels(table.rows))
        if _is_number(row.params.get("trainable"))
        and row.params["trainable"] > 0
        and _is_number(row.scores.get("global"))
    ]
    if points:
        title = f"Global accuracy vs trainable parameters\n{table.title}"
        written.append(plot_accuracy_vs_params(points, folder / "accuracy_vs_params.png", title))
    else:
        notes.append("No run in this table has both a global accuracy and a trainable-parameter count.")
    return written, notes


def write_report(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Return the written files: report.md, and per table <slug>/table.md, table.csv, loss_curves.png,
    accuracy_vs_params.png; runs left out are named in report.md and on stderr."""
    rows, problems = load_runs([Path(d) for d in run_dirs])
    for problem in problems:
        print(problem, file=sys.stderr)
    if not rows:
        listed = " ".join(str(d) for d in run_dirs) or "(none)"
        raise ValueError(
            f"None of the run directories given ({listed}) has scores to report; "
            "train with `medtune train` or score a run with `medtune eval` first."
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    sections = ["# medtune report", ""]
    for table in group_tables(rows):
        folder = out_dir / table.slug
        folder.mkdir(parents=True, exist_ok=True)
        markdown = table_markdown(table)
        written.append(write_text_atomic(folder / "table.md", f"## {table.title}\n\n{markdown}"))
        written.append(write_text_atomic(folder / "table.csv", table_csv(table)))
        figures, notes = _figures(table, folder)
        written += figures
        sections += [f"## {table.title}", "", markdown]
        sections += [f"![{p.stem}]({table.slug}/{p.name})" for p in figures] + [""]
        sections += [*notes, ""] if notes else []
    if problems:
        sections += ["## Left out", "", *(f"- {p}" for p in problems), ""]
    report = write_text_atomic(out_dir / "report.md", "\n".join(sections))
    return [report, *written]
