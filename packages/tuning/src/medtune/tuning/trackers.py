"""Experiment trackers (``--report-to tensorboard,wandb,mlflow``) through accelerate's tracker classes.

Each tracker writes into the run directory unless the user points it elsewhere: TensorBoard event files
in ``RUN_DIR/tensorboard``, an MLflow file store in ``RUN_DIR/mlruns`` (unless ``MLFLOW_TRACKING_URI`` names
a server), Weights & Biases' files in ``RUN_DIR/wandb`` (``WANDB_MODE=offline`` keeps it off the network).
``metrics.jsonl`` is written whatever is chosen. Only the main process creates trackers.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from medtune.tuning.errors import UsageError

# tracker -> (the module it needs, the medtune extra that installs it)
NEEDS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}
DEFAULT = ("tensorboard",)  # TrainConfig.report_to's default: skipped with a note where not installed


def available(name: str) -> bool:
    """Return whether the package tracker ``name`` needs is installed (without importing it)."""
    return importlib.util.find_spec(NEEDS[name][0]) is not None


def check_trackers(report_to: tuple[str, ...]) -> tuple[str, ...]:
    """Return the trackers a run will use; raise a UsageError for one asked for but not installed.

    The default (TensorBoard) is dropped, not refused, where tensorboard is missing.
    """
    missing = [name for name in report_to if not available(name)]
    if missing and tuple(report_to) != DEFAULT:
        extras = ",".join(NEEDS[m][1] for m in missing)
        raise UsageError(
            f"--report-to {','.join(report_to)}: {', '.join(missing)} is not installed; "
            f"pip install 'medtune[{extras}]' or leave {', '.join(missing)} out of --report-to"
        )
    return tuple(name for name in report_to if name not in missing)


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return ``config`` with nested settings as ``a.b`` keys and every value a scalar trackers accept."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, list | tuple):
            out[f"{prefix}{key}"] = "none" if value is None else ",".join(map(str, value))
        else:
            out[f"{prefix}{key}"] = value
    return out


class Trackers:
    """The run's trackers: ``log`` a dict of scalars at a step to all of them, ``close`` at the end."""

    def __init__(self, names: tuple[str, ...], run_dir: Path, config: dict[str, Any]):
        from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

        self.names, self.active = names, []
        project = f"medtune-{config['family']}-{config['method']}"
        for name in names:
            if name == "tensorboard":
                tracker = TensorBoardTracker("tensorboard", run_dir)
            elif name == "wandb":
                tracker = WandBTracker(project, name=run_dir.name, dir=str(run_dir))
            else:
                import mlflow

                if not os.environ.get("MLFLOW_TRACKING_URI"):
                    # A file store in the run directory needs no server or database; MLflow 3 asks for this
                    # opt-in to it (its own flag), as the store is kept but no longer extended.
                    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                    mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
                tracker = MLflowTracker(experiment_name=project, run_name=run_dir.name)
            start = getattr(tracker, "start", None)  # accelerate >= 1.5 starts trackers apart from __init__
            if start is not None:
                start()
            tracker.store_init_configuration(flat(config))
            self.active.append(tracker)

    def log(self, values: dict[str, float], step: int) -> None:
        """Log scalars (``train/loss``, ...) at optimizer step ``step`` to every tracker."""
        for tracker in self.active:
            tracker.log(values, step=step)

    def close(self) -> None:
        """Flush and end every tracker's run."""
        for tracker in self.active:
            tracker.finish()
        self.active = []


def start_trackers(report_to: tuple[str, ...], run_dir: Path, config: dict[str, Any]) -> Trackers | None:
    """Return the run's trackers (None when there are none to write)."""
    names = check_trackers(report_to)
    return Trackers(names, run_dir, config) if names else None
