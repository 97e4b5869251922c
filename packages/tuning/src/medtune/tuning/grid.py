"""Run a grid spec: train every cell, choose each method's rate on validation, score, write the tables.

The cells go through the very code `medtune train` and `medtune eval` run: `train(cfg)` for each cell,
then the eval command once per evaluation set over all cells (adapters sharing a base swap into one
loaded model). The order is what keeps the comparison fair: every cell is trained, rates are chosen from
validation numbers only and written to ``selection.json``, and only then is any test split read.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from medtune.eval import eval_dir_name, load_runs
from medtune.eval.grid_report import GridEntry, GridTable, write_grid_report
from medtune.tuning.checkpoint import find_checkpoint
from medtune.tuning.errors import UsageError
from medtune.tuning.grid_spec import Cell, EvalSet, GridSpec
from medtune.tuning.recipes import TrainConfig, resolve_config
from medtune.tuning.run_dir import write_json_atomic

# A validation pass only at the last step when the spec asks for none: `train` always validates there.
FINAL_ONLY = 1_000_000_000


@dataclass
class GridResult:
    """What a finished grid reports: its folder, cells trained now vs found done, and files written."""

    grid_dir: Path
    trained: list[str]
    skipped: list[str]
    written: list[Path]
    seconds: float
    tables: list[GridTable]


def resolve_dataset(ref: str) -> Path:
    """Return the folder of a dataset reference: a path, or ``demo:<name>`` for a built-in demo set."""
    if ref.startswith("demo:"):
        from medtune.data.demo import DEMO_SETS, demo_dataset

        name = ref.removeprefix("demo:")
        if name not in DEMO_SETS:
            raise UsageError(
                f"unknown demo set {ref!r}; choose one of: {', '.join(f'demo:{n}' for n in DEMO_SETS)}"
            )
        return demo_dataset(name)
    path = Path(ref).expanduser()
    if not path.exists():
        raise UsageError(f"dataset {path} does not exist; pass a folder in its published layout")
    return path


def cell_config(spec: GridSpec, cell: Cell, cell_dir: Path) -> TrainConfig:
    """Return the cell's training config: recipe defaults, then the spec's settings, then the cell's own."""
    e = cell.experiment
    overrides = {**spec.settings, **e.settings}
    if spec.select == "val_loss" and spec.sweeps():
        overrides.setdefault("eval_every", FINAL_ONLY)
    overrides.update(
        dataset=str(resolve_dataset(e.train)),
        model_path=e.model_path,
        seed=cell.seed,
        output_dir=str(cell_dir),
        # Nothing is scored inside train: the test split is read only after the rates are chosen.
        eval_before=False,
        eval_after=False,
    )
    if cell.lr is not None:
        overrides["lr"] = cell.lr
    return resolve_config(e.family, cell.method, e.preset, cell.paradigm, overrides)


def _comparable(config: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(config, default=str)).items() if k != "output_dir"}


def train_cell(cfg: TrainConfig, cell: Cell, cell_dir: Path, *, progress: bool) -> tuple[Path, bool]:
    """Return (run directory, whether it trained now): a finished run is kept, a killed one resumed or redone."""
    from medtune.tuning.train import train

    wanted = _comparable(cfg.to_json())
    saved_file = cell_dir / "cell.json"
    if saved_file.is_file():
        saved = json.loads(saved_file.read_text())
        differ = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        if differ:
            raise UsageError(
                f"grid cell {cell.id} in {cell_dir} was trained with other settings ({', '.join(differ)}); "
                "pass another --output-dir for the new grid, or delete that cell's folder to train it again"
            )
    cell_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(saved_file, wanted)
    for run in sorted(p for p in cell_dir.iterdir() if p.is_dir()):
        if (run / "adapter" / "manifest.json").is_file():
            return run, False
        try:
            find_checkpoint(run)
        except UsageError:
            shutil.rmtree(run)  # killed before its first checkpoint (or before writing anything): start again
            continue
        print(f"[grid] {cell.id}: resuming {run.name} from its checkpoint")
        return train(cfg, progress=progress, resume=run).run_dir, True
    return train(cfg, progress=progress).run_dir, True


def evaluate_cells(spec: GridSpec, runs: dict[Cell, Path], evalset: EvalSet, *, progress: bool) -> None:
    """Score every run on ``evalset`` with the `medtune eval` path, skipping runs already scored there."""
    from medtune.tuning.cli import build_parser

    source = resolve_dataset(evalset.dataset)
    folder = eval_dir_name(source.name, evalset.split)
    by_base: dict[str | None, list[Path]] = defaultdict(list)
    for cell, run in runs.items():
        own = evalset in cell.experiment.evals
        validation = evalset.split == "validation" and evalset.dataset == cell.experiment.train
        if (own or validation) and not (run / folder / "scores.json").is_file():
            by_base[cell.experiment.model_path].append(run)
    for model_path, pending in by_base.items():
        print(f"[grid] scoring {len(pending)} run(s) on {source.name}/{evalset.split} ({evalset.role})")
        argv = ["eval", *map(str, pending), "--dataset", str(source), "--split", evalset.split]
        argv += ["--task", evalset.task] if evalset.task else []
        argv += ["--model-path", model_path] if model_path else []
        argv += [] if progress else ["--quiet"]
        args = build_parser().parse_args(argv)
        args.run(args)


def last_val_loss(run: Path) -> float | None:
    """Return the last validation loss a run logged in metrics.jsonl (None if it logged none)."""
    value = None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        if line.strip() and "val_loss" in (row := json.loads(line)):
            value = float(row["val_loss"])
    return value


def validation_value(spec: GridSpec, cell: Cell, run: Path) -> float:
    """Return the number a rate is chosen by: the final validation loss, or validation accuracy (METEOR for reports)."""
    if spec.select == "val_loss":
        value = last_val_loss(run)
        if value is None:
            raise UsageError(f"{run} logged no validation loss; the training set needs a validation split")
        return value
    source = resolve_dataset(cell.experiment.train)
    scores = json.loads((run / eval_dir_name(source.name, "validation") / "scores.json").read_text())
    return float(scores["global"] if "global" in scores else scores["meteor"])


def select_rates(spec: GridSpec, runs: dict[Cell, Path]) -> dict[tuple[str, str, str, str], dict]:
    """Return, per Cell.key (preset, method, paradigm, own training set), the rate with the best mean
    validation number over seeds."""
    values: dict[tuple, dict[float | None, list[float]]] = defaultdict(lambda: defaultdict(list))
    for cell, run in runs.items():
        if len(cell.experiment.lrs[cell.method]) > 1:
            values[cell.key][cell.lr].append(validation_value(spec, cell, run))
    chosen = {}
    for key, per_lr in values.items():
        means = {lr: statistics.fmean(v) for lr, v in per_lr.items()}
        pick = min if spec.select == "val_loss" else max
        chosen[key] = {"lr": pick(means, key=means.__getitem__), "by": spec.select, "values": means}
    return chosen


def run_grid(spec: GridSpec, grid_dir: Path, *, progress: bool = True) -> GridResult:
    """Train and score every cell of ``spec`` under ``grid_dir`` (resuming what is there); write the report."""
    started = time.perf_counter()
    grid_dir.mkdir(parents=True, exist_ok=True)
    cells = spec.cells()
    configs = {
        cell: cell_config(spec, cell, grid_dir / "runs" / cell.id) for cell in cells
    }  # all checked first
    print(f"[grid] {spec.name}: {len(cells)} cell(s) in {grid_dir}")
    runs: dict[Cell, Path] = {}
    trained, skipped = [], []
    for i, cell in enumerate(cells, start=1):
        print(f"[grid] cell {i}/{len(cells)}: {cell.id}")
        runs[cell], now = train_cell(configs[cell], cell, grid_dir / "runs" / cell.id, progress=progress)
        (trained if now else skipped).append(cell.id)
        if not now:
            print(f"[grid] {cell.id}: already trained ({runs[cell].name}), skipped")

    if spec.sweeps():
        if spec.select == "val_accuracy":
            for train in dict.fromkeys(e.train for e in spec.experiments):
                evaluate_cells(spec, runs, EvalSet(train, "in-distribution", "validation"), progress=progress)
        selection = select_rates(spec, runs)
        write_json_atomic(
            grid_dir / "selection.json",
            [
                {"preset": k[0], "method": k[1], "paradigm": k[2], "train": k[3] or spec.train, **v}
                for k, v in selection.items()
            ],
        )
    else:
        selection = {}

    for evalset in spec.evals:
        evaluate_cells(spec, runs, evalset, progress=progress)
    tables = grid_tables(spec, runs, configs, selection)
    written = write_grid_report(tables, grid_dir / "report", spec.name)
    return GridResult(grid_dir, trained, skipped, written, time.perf_counter() - started, tables)


def grid_tables(
    spec: GridSpec, runs: dict[Cell, Path], configs: dict[Cell, TrainConfig], selection: dict
) -> list[GridTable]:
    """Return one table per (evaluation set, preset): the chosen rate per method and paradigm, over seeds."""
    tables = []
    for evalset in spec.evals:
        folder = eval_dir_name(resolve_dataset(evalset.dataset).name, evalset.split)
        for preset in dict.fromkeys(e.preset for e in spec.experiments if evalset in e.evals):
            entries: dict[tuple, GridEntry] = {}
            for cell, run in runs.items():
                if cell.experiment.preset != preset or evalset not in cell.experiment.evals:
                    continue
                rows = [r for r in load_runs([run])[0] if r.label.endswith("/" + folder)]
                lr = configs[cell].lr
                own = cell.experiment.train_label
                key = (cell.method, cell.paradigm, lr, own)
                if key not in entries:
                    chosen = selection.get(cell.key)
                    entries[key] = GridEntry(
                        method=f"{cell.method} (on {own})" if own else cell.method,
                        paradigm=cell.paradigm.split(","),
                        lr=lr,
                        selected=chosen is None or chosen["lr"] == cell.lr,
                        rows=[],
                    )
                entries[key].rows.extend(rows)
            tables.append(
                GridTable(
                    title=f"{evalset.title}, preset {preset}",
                    role=evalset.role,
                    preset=preset,
                    entries=[e for e in entries.values() if e.rows],
                    selected_by=spec.select if spec.sweeps() else None,
                )
            )
    return tables
