"""Training checkpoints: tuned tensors, optimizer, scheduler, RNG states and data position, renamed into place."""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Sampler

from medtune.data.run_files import ADAPTER, CHECKPOINT, CONFIG
from medtune.tuning.errors import UsageError
from medtune.tuning.recipes import RESUME_IDENTITY, RESUME_TRAJECTORY  # from the fields' metadata
from medtune.tuning.run_dir import check_free_space, replace_folder

TENSORS = "tuned.safetensors"
TRAINING_STATE = "training_state.pt"
POSITION = "position.json"


@dataclass
class Position:
    """Where training stands: optimizer steps done, the epoch, and micro-batches consumed in that epoch."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val_loss: float | None = None
    losses: list[float] = field(default_factory=list)


class EpochShuffle(Sampler[int]):
    """Indices in a fresh permutation per epoch, seeded by (seed, epoch), that can skip what was seen."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self.epoch, self.skip = 0, 0

    def start(self, epoch: int, skip_samples: int = 0) -> None:
        """Make the next iteration yield epoch ``epoch``'s order without its first ``skip_samples``."""
        self.epoch, self.skip = epoch, skip_samples

    def permutation(self) -> torch.Tensor:
        """Return this epoch's permutation of all indices (the same for the same seed and epoch)."""
        return torch.randperm(
            self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        )

    def __iter__(self):
        return iter(self.permutation()[self.skip :].tolist())

    def __len__(self) -> int:
        return max(0, self.size - self.skip)


def rng_states() -> dict[str, Any]:
    """Return the Python, NumPy, torch and (if present) CUDA generator states."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_states`."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def tuned_state(model: nn.Module, names: frozenset[str]) -> dict[str, torch.Tensor]:
    """Return CPU copies of the tuned tensors named ``names``."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if n in names}


def save_checkpoint(
    run_dir: Path,
    *,
    model: nn.Module,
    names: frozenset[str],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    position: Position,
    name: str = CHECKPOINT,
) -> Path:
    """Write ``run_dir/name/`` via a temporary folder renamed into place; the previous one survives any kill."""
    tensors = tuned_state(model, names)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states()}
    optimizer_bytes = sum(
        t.numel() * t.element_size()
        for s in optimizer.state.values()
        for t in s.values()
        if torch.is_tensor(t)
    )
    check_free_space(
        run_dir, sum(t.numel() * t.element_size() for t in tensors.values()) + optimizer_bytes, name
    )
    path = run_dir / name
    tmp = run_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(tensors, str(tmp / TENSORS), metadata={"format": "pt"})
    torch.save(state, tmp / TRAINING_STATE)
    (tmp / POSITION).write_text(json.dumps(asdict(position)) + "\n")
    for file in tmp.iterdir():  # data on disk before the rename makes it visible
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
    # Without path, a kill mid-swap left .old as the only complete checkpoint: it is kept until now.
    return replace_folder(tmp, path)


def find_checkpoint(run_dir: Path) -> Path:
    """Return the run's latest complete checkpoint (also one a kill left mid-swap as ``.checkpoint.old``)."""
    for candidate in (run_dir / CHECKPOINT, run_dir / f".{CHECKPOINT}.old"):
        if (candidate / POSITION).is_file():
            return candidate
    if (run_dir / ADAPTER).is_dir():
        raise UsageError(
            f"{run_dir} has no checkpoint to resume from: the run finished (its adapter is saved) without "
            "--save-every checkpoints, so there is nothing to continue; score it with medtune eval or start a "
            "new run"
        )
    raise UsageError(
        f"{run_dir} has no checkpoint to resume from (no {CHECKPOINT}/{POSITION}); the run was killed before "
        "its first --save-every interval, so start it again without --resume"
    )


def load_checkpoint(
    path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> Position:
    """Copy a checkpoint's tensors, optimizer, scheduler and RNG states in place; return the data position.

    A damaged or foreign checkpoint (unreadable file, a tensor of another name or shape) is a UsageError
    naming the file, and nothing of it is copied into the model.
    """
    params = dict(model.named_parameters())
    try:
        tensors = load_file(str(path / TENSORS))
        state = torch.load(path / TRAINING_STATE, weights_only=False)
        position = Position(**json.loads((path / POSITION).read_text(encoding="utf-8")))
    except Exception as err:  # safetensors, pickle and json each raise their own kinds for a damaged file
        raise UsageError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err)[:200]}); it is damaged, so "
            "start the run again without --resume"
        ) from None
    for name, tensor in tensors.items():
        if name not in params or params[name].shape != tensor.shape:
            raise UsageError(
                f"checkpoint {path / TENSORS} holds tensor {name} {tuple(tensor.shape)}, which this model "
                f"{'lacks' if name not in params else f'has as {tuple(params[name].shape)}'}; it belongs to "
                "another model or method, so start the run again without --resume"
            )
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_states(state["rng"])
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise UsageError(
            f"checkpoint {path / TRAINING_STATE} does not match this run ({type(err).__name__}: "
            f"{str(err)[:200]}); start the run again without --resume"
        ) from None
    return position


def check_resume(run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Return the saved config of ``run_dir`` after checking ``config`` continues the same run."""
    file = run_dir / CONFIG
    if not file.is_file():
        raise UsageError(f"--resume {run_dir}: not a medtune run directory (no {CONFIG})")
    try:
        saved = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(
            f"--resume {run_dir}: {file} cannot be read ({err}); the run cannot be continued"
        ) from None
    if not isinstance(saved, dict):
        raise UsageError(
            f"--resume {run_dir}: its config.json holds no settings object; the run cannot be continued"
        )
    changed = _data_changed(saved.get("dataset"), config.get("dataset"))
    if changed:
        raise UsageError(f"--resume {run_dir}: {changed}; resume with the run's own data or start a new run")
    differ = [
        f"{key} {saved.get(key)!r} there, {config.get(key)!r} now"
        for key in (*RESUME_IDENTITY, *RESUME_TRAJECTORY)
        if key != "dataset" and _plain(saved.get(key)) != _plain(config.get(key))
    ]
    if differ:
        raise UsageError(
            f"--resume {run_dir} was made with another configuration ({'; '.join(differ)}); "
            "resume with the run's own settings or start a new run"
        )
    return saved


def _data_changed(saved: Any, now: Any) -> str | None:
    """Return how the run's data differs from what it was started on, or None when it is the same data.

    The data is compared by its records' fingerprint, not by its path: a moved copy resumes, an edited
    one does not. A run saved before fingerprints existed is compared by path.
    """
    saved, now = _plain(saved) or {}, _plain(now) or {}
    if saved.get("task") != now.get("task"):
        return f"the run was a {saved.get('task')} run, and the data now reads as {now.get('task')}"
    if "fingerprint" in saved and "fingerprint" in now:
        if saved["fingerprint"] != now["fingerprint"]:
            return (
                f"the training data changed since the run started (its records' fingerprint was "
                f"{saved['fingerprint']}, {now['fingerprint']} now, read from {now.get('source')})"
            )
        return None
    if saved.get("source") != now.get("source"):
        return f"the run was trained on {saved.get('source')}, not {now.get('source')}"
    return None


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
