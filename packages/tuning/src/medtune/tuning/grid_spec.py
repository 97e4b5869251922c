"""A grid spec (TOML or YAML): experiments of methods x paradigms x learning rates x seeds, and its datasets."""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medtune.core_models import FAMILY_GROUPS, default_preset, get_preset
from medtune.tuning.errors import UsageError
from medtune.tuning.methods import METHODS
from medtune.tuning.paradigm import Paradigm

SPEC_DIR = Path(__file__).parent / "grid_specs"
ROLES = ("in-distribution", "ood", "zero-shot")
SELECT = ("val_loss", "val_accuracy")
TOP_KEYS = {"name", "description", "train", "eval", "experiment", "lrs", "seeds", "select", "settings"}
EXPERIMENT_KEYS = {
    "family",
    "preset",
    "model_path",
    "methods",
    "paradigms",
    "lrs",
    "settings",
    "train",
    "eval",
}
EVAL_KEYS = {"dataset", "role", "split", "task", "label"}


@dataclass(frozen=True)
class EvalSet:
    """A dataset split every cell is scored on, and what it stands for in the study."""

    dataset: str  # a path, or demo:<name> for a built-in demo set
    role: str  # in-distribution, ood or zero-shot
    split: str = "test"
    task: str | None = None
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or f"{Path(self.dataset).name} ({self.role}, {self.split})"


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: it holds dicts
class Experiment:
    """One family's block of the grid: its methods, paradigms and per-method learning rates."""

    family: str
    preset: str
    methods: tuple[str, ...]
    paradigms: tuple[str, ...]
    lrs: dict[str, tuple[float | None, ...]]  # None: the recipe's own rate for that method
    train: str  # the spec's training set unless the experiment names its own (e.g. report generation)
    evals: tuple[EvalSet, ...]  # the training set's test split first
    model_path: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    train_label: str = ""  # the training set's short name where the experiment names its own, else ""


@dataclass(frozen=True)
class Cell:
    """One training run of the grid: a method under a paradigm at one learning rate and seed."""

    experiment: Experiment
    method: str
    paradigm: str
    lr: float | None
    seed: int

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Return what learning rates are selected over: (preset, method, paradigm, own training set or '')."""
        return (self.experiment.preset, self.method, self.paradigm, self.experiment.train_label)

    @property
    def id(self) -> str:
        """Return the cell's folder name: unique in a grid, the same on every run of the spec (resume finds it)."""
        lr = "recipe" if self.lr is None else f"{self.lr:g}"
        own = f"-on-{self.experiment.train_label}" if self.experiment.train_label else ""
        paradigm = self.paradigm.replace(",", "-")
        return f"{self.experiment.preset}-{self.method}-{paradigm}{own}-lr{lr}-s{self.seed}"


@dataclass(frozen=True)
class GridSpec:
    """A whole grid: name, training set, evaluation sets, experiments, seeds and how rates are chosen."""

    name: str
    train: str
    evals: tuple[EvalSet, ...]
    experiments: tuple[Experiment, ...]
    seeds: tuple[int, ...] = (0,)
    select: str = "val_loss"
    settings: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def cells(self) -> list[Cell]:
        """Return every cell in a fixed order: experiment, method, paradigm, learning rate, seed."""
        return [
            Cell(e, method, paradigm, lr, seed)
            for e in self.experiments
            for method, paradigm in itertools.product(e.methods, e.paradigms)
            for lr, seed in itertools.product(e.lrs[method], self.seeds)
        ]

    def sweeps(self) -> bool:
        """Return whether any method is trained at more than one learning rate (so one is selected)."""
        return any(len(lrs) > 1 for e in self.experiments for lrs in e.lrs.values())


def built_in_specs() -> dict[str, Path]:
    """Return the built-in spec files by name (quick, demo, and one per study table)."""
    return {p.stem: p for p in sorted(SPEC_DIR.glob("*.toml"))}


def read_spec(source: str | Path) -> GridSpec:
    """Return the spec in a TOML/YAML file, or the built-in spec of that name."""
    path = Path(source).expanduser()
    if not path.is_file():
        known = built_in_specs()
        if str(source) not in known:
            raise UsageError(
                f"grid spec {source} is neither a file nor a built-in spec; built-in: {', '.join(known)}"
            )
        path = known[str(source)]
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as err:  # tomllib and yaml raise their own parse errors
        raise UsageError(f"grid spec {path} could not be parsed: {err}") from None
    if not isinstance(data, dict):
        raise UsageError(f"grid spec {path} holds no table of settings")
    return spec_from_dict(data, path.parent, default_name=path.stem)


def _check_keys(data: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(
            f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def _dataset(value: Any, base: Path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where} must name a dataset: a folder, a file, or demo:<name>")
    if value.startswith("demo:"):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path))


def _lrs(value: Any, methods: tuple[str, ...], where: str) -> dict[str, tuple[float | None, ...]]:
    def as_list(v: Any, key: str) -> tuple[float | None, ...]:
        items = v if isinstance(v, list) else [v]
        out = []
        for item in items:
            if item == "recipe":
                out.append(None)
            elif isinstance(item, int | float) and not isinstance(item, bool) and 0 < item < 1:
                out.append(float(item))
            else:
                raise UsageError(f'{where} {key}: {item!r} is not a learning rate in (0, 1) or "recipe"')
        if not out:
            raise UsageError(f"{where} {key} is empty; give at least one learning rate")
        return tuple(out)

    if isinstance(value, dict):
        unknown = sorted(set(value) - set(methods))
        if unknown:
            raise UsageError(
                f"{where} lrs names method(s) {', '.join(unknown)} that the experiment does not run"
            )
        return {m: as_list(value.get(m, "recipe"), f"lrs.{m}") for m in methods}
    lrs = as_list("recipe" if value is None else value, "lrs")
    return {m: lrs for m in methods}


def spec_from_dict(data: dict, base: Path = Path("."), default_name: str = "grid") -> GridSpec:
    """Return the validated spec of parsed TOML/YAML ``data`` (relative paths are relative to ``base``)."""
    _check_keys(data, TOP_KEYS, "grid spec")
    name = str(data.get("name", default_name))
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise UsageError(f"grid name {name!r} may hold only letters, digits, '.', '_' and '-'")
    if "train" not in data:
        raise UsageError('grid spec names no training dataset: add train = "PATH" (or "demo:downstream")')
    train = _dataset(data["train"], base, "train")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UsageError(f"seeds must be a list of integers, got {seeds!r}")
    select = data.get("select", "val_loss")
    if select not in SELECT:
        raise UsageError(f"select {select!r}: choose val_loss or val_accuracy (the test split is never used)")
    settings = dict(data.get("settings") or {})
    experiments = []
    for i, entry in enumerate(data.get("experiment") or [], start=1):
        experiments.append(
            _experiment(entry, data.get("lrs"), train, data.get("eval"), base, f"experiment {i}")
        )
    if not experiments:
        raise UsageError("grid spec has no [[experiment]] (family, methods, paradigms)")
    spec = GridSpec(
        name,
        train,
        tuple(dict.fromkeys(s for e in experiments for s in e.evals)),
        tuple(experiments),
        tuple(seeds),
        select,
        settings,
        str(data.get("description", "")),
    )
    ids = [cell.id for cell in spec.cells()]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise UsageError(
            f"grid spec trains cell(s) {', '.join(twice)} more than once (two experiments with the same "
            "preset, method, paradigm and training set); drop the repeat or give one experiment its own train"
        )
    return spec


def _evals(train: str, entries: Any, base: Path, where: str) -> tuple[EvalSet, ...]:
    evals = [EvalSet(train, "in-distribution")]
    for i, entry in enumerate(entries or [], start=1):
        at = f"{where}eval entry {i}"
        if not isinstance(entry, dict):
            raise UsageError(f"{at} must be a table with dataset and role")
        _check_keys(entry, EVAL_KEYS, at)
        role = entry.get("role", "ood")
        if role not in ROLES:
            raise UsageError(f"{at} role {role!r}: choose one of {', '.join(ROLES)}")
        if entry.get("split", "test") not in ("validation", "test"):
            raise UsageError(f"{at} split must be test or validation (the grid never scores train)")
        dataset = _dataset(entry.get("dataset"), base, f"{at} dataset")
        evals.append(
            EvalSet(dataset, role, entry.get("split", "test"), entry.get("task"), entry.get("label", ""))
        )
    return tuple(evals)


def _experiment(
    entry: Any, default_lrs: Any, train: str, default_evals: Any, base: Path, where: str
) -> Experiment:
    if not isinstance(entry, dict):
        raise UsageError(f"{where} must be a table with family, methods and paradigms")
    _check_keys(entry, EXPERIMENT_KEYS, where)
    family = entry.get("family")
    if family not in FAMILY_GROUPS:
        raise UsageError(f"{where} family {family!r}: choose one of {', '.join(FAMILY_GROUPS)}")
    try:
        preset = get_preset(entry["preset"]) if entry.get("preset") else default_preset(family)
    except ValueError as err:
        raise UsageError(f"{where}: {err}") from None
    if preset.family != family:
        raise UsageError(f"{where} preset {preset.name!r} is a {preset.family} model, not {family}")
    methods = tuple(entry.get("methods") or METHODS)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UsageError(f"{where} names unknown method(s) {', '.join(bad)}; known: {', '.join(METHODS)}")
    paradigms = tuple(str(Paradigm.parse(p, family)) for p in (entry.get("paradigms") or [None]))
    model_path = entry.get("model_path")
    own_train = _dataset(entry["train"], base, f"{where} train") if "train" in entry else train
    label = ""
    if own_train != train:  # named in cell folders and table rows, so its cells differ from the others
        label = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(own_train.removeprefix("demo:")).name).strip("-")
    return Experiment(
        family,
        preset.name,
        methods,
        paradigms,
        _lrs(entry.get("lrs", default_lrs), methods, where),
        own_train,
        _evals(own_train, entry.get("eval", default_evals), base, f"{where} "),
        None if model_path is None else _dataset(model_path, base, f"{where} model_path"),
        dict(entry.get("settings") or {}),
        label,
    )


def with_overrides(
    spec: GridSpec,
    *,
    model_path: str | None = None,
    preset: str | None = None,
    dataset: str | None = None,
    evals: dict[str, str] | None = None,
    lrs: list[float] | None = None,
    seeds: list[int] | None = None,
    settings: dict[str, Any] | None = None,
) -> GridSpec:
    """Return ``spec`` with the command line's overrides: a checkpoint, datasets, rates, seeds, settings."""
    experiments = list(spec.experiments)
    if model_path or preset:
        families = {e.family for e in experiments}
        if len(families) > 1:
            raise UsageError(
                f"this spec has {' and '.join(sorted(families))} experiments; --model-path and --preset apply "
                "to one family: use a spec with one family (e.g. table1 or table2) or write your own"
            )
        if preset:
            p = get_preset(preset) if preset in _preset_names() else None
            if p is None or p.family not in families:
                raise UsageError(f"--preset {preset!r} is not a preset of the {families.pop()} family")
        experiments = [
            replace(e, model_path=model_path or e.model_path, preset=preset or e.preset) for e in experiments
        ]
    if lrs:
        experiments = [replace(e, lrs={m: tuple(lrs) for m in e.methods}) for e in experiments]

    def moved(e: Experiment) -> Experiment:
        train = dataset if dataset and e.train == spec.train else e.train
        out = [EvalSet(train, "in-distribution")]
        for s in e.evals[1:]:
            path = (evals or {}).get(s.role)
            out.append(replace(s, dataset=path, label="") if path else s)
        return replace(e, train=train, evals=tuple(out))

    experiments = [moved(e) for e in experiments]
    return replace(
        spec,
        train=dataset or spec.train,
        evals=tuple(dict.fromkeys(s for e in experiments for s in e.evals)),
        experiments=tuple(experiments),
        seeds=tuple(seeds) if seeds else spec.seeds,
        settings={**spec.settings, **(settings or {})},
    )


def _preset_names() -> set[str]:
    from medtune.core_models.presets import PRESETS

    return set(PRESETS)
