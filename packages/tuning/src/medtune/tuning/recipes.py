"""Training recipes (the paper's settings and the demo's own) and `TrainConfig`, the one table of run settings.

Every run setting is one field of :class:`TrainConfig` (or of the methods' ``MethodOptions``) made with
:func:`~medtune.tuning.knobs.knob`: the `medtune train` flags, the config-file keys (TOML or YAML), the
``--set KEY=VALUE`` names, the help text, the checks and what a resume must keep all come from it. To add
a setting, add a field here.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medtune.tuning.errors import UsageError
from medtune.tuning.knobs import check_values, key_table, keys_of, knob, knobs, read_settings
from medtune.tuning.methods import MethodOptions

Scheduler = Literal["cosine", "linear", "constant"]
Task = Literal["vqa", "report"]
OnInvalid = Literal["raise", "report"]
Tracker = Literal["tensorboard", "wandb", "mlflow"]
Dtype = Literal["auto", "bf16", "fp16", "fp32"]

POSITIVE = (lambda v: v > 0, "positive")
AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
UNIT_OPEN = (lambda v: 0 < v < 1, "in (0, 1)")
UNIT_RIGHT_OPEN = (lambda v: 0 <= v < 1, "in [0, 1)")
# inf epochs would be an endless run; numpy and torch seeds are unsigned 32-bit.
FINITE_POSITIVE = (lambda v: 0 < v < float("inf"), "a positive, finite number")
SEED = (lambda v: 0 <= v < 2**32, "in [0, 2**32)")

# The paper's settings (section 4.4). LLaVA-Med: AdamW, lr 2e-5, warm-up 0.03, cosine, TF32, bf16.
# MISS: lr 2e-5, weight decay 0.05, batch 16, 120 epochs.
PAPER_RECIPES: dict[str, dict[str, Any]] = {
    "llava": {
        "lr": 2e-5,
        "warmup_ratio": 0.03,
        "scheduler": "cosine",
        "weight_decay": 0.0,
        "bf16": True,
        "tf32": True,
        "batch_size": 4,
        "epochs": 3.0,
    },
    # The vlm family's checkpoints are LLaVA-style decoders: the LLaVA-Med recipe.
    "vlm": {
        "lr": 2e-5,
        "warmup_ratio": 0.03,
        "scheduler": "cosine",
        "weight_decay": 0.0,
        "bf16": True,
        "tf32": True,
        "batch_size": 4,
        "epochs": 3.0,
    },
    "miss": {
        "lr": 2e-5,
        "warmup_ratio": 0.0,
        "scheduler": "cosine",
        "weight_decay": 0.05,
        "batch_size": 16,
        "epochs": 120.0,
        "bf16": True,
        "tf32": True,
    },
}
# The built-in demo tunes a 2M-parameter model for a minute on a CPU: its own rates, larger for fewer tensors.
DEMO_LR = {"ln": 1e-2, "attention": 1e-3, "ffn": 1e-3, "lora": 3e-3, "prefix": 1e-2, "full": 5e-4}
# The miss demo's default paradigm (T,PEFT,T) trains its ViT and decoder fully: one moderate rate for all.
DEMO_LR_MISS = 1e-3
DEMO_RECIPE: dict[str, Any] = {
    "warmup_ratio": 0.05,
    "scheduler": "cosine",
    "weight_decay": 0.0,
    "batch_size": 16,
    "epochs": 6.0,
    "bf16": False,
    "tf32": False,
}
# The families with a built-in demo model (tiny-<family>), so with a demo recipe.
DEMO_FAMILIES = ("llava", "miss")
# Chosen on the command line (FAMILY METHOD) or derived, so a config file may not set them.
NOT_IN_FILES = {
    "family": "the family is the command's first argument (medtune train FAMILY METHOD)",
    "method": "the method is the command's second argument (medtune train FAMILY METHOD)",
    "recipe": "the recipe follows from the preset and --model-path (demo for a built-in demo model, else paper)",
}
# Config-file keys that are not TrainConfig knobs but name the run (checked against the command line).
RUN_KEYS = ("preset", "paradigm")


@dataclass
class TrainConfig:
    """Everything a run needs, fully resolved and saved as config.json."""

    family: str
    method: str
    preset: str
    paradigm: str
    recipe: str  # "demo" or "paper"
    # The Python API also takes a datasets.Dataset / DatasetDict here (see __post_init__).
    dataset: str | None = knob(
        None, "local dataset folder or file in its published layout", resume="identity", metavar="PATH"
    )
    eval_dataset: str | None = knob(
        None, "dataset whose test split is scored (default: --dataset's own test split)", metavar="PATH"
    )
    columns: str | None = knob(
        None,
        "column names of a Hugging Face table where they differ: question=Q,answer=A,image=I,answer_type=T",
        resume="identity",
        metavar="MAP",
    )
    image_folder: str | None = knob(
        None,
        "folder the dataset's image paths are relative to (a path leaving it is refused)",
        resume="identity",
        metavar="PATH",
    )
    model_path: str | None = knob(
        None, "local checkpoint folder (nothing is downloaded)", resume="identity", metavar="PATH"
    )
    vision_tower: str | None = knob(
        None, "CLIP folder for a LLaVA-Med release whose vision tower is not inside it", metavar="PATH"
    )
    output_dir: str = knob("runs", "where run directories go", metavar="PATH")
    task: Task | None = knob(None, "what to train and score; none: found from the dataset's layout")
    lr: float = knob(
        2e-5, "peak learning rate", flag="learning-rate", aliases=["lr"], check=UNIT_OPEN, resume="trajectory"
    )
    weight_decay: float = knob(0.0, "AdamW weight decay", check=UNIT_RIGHT_OPEN, resume="trajectory")
    warmup_ratio: float = knob(
        0.03, "share of the steps spent warming the rate up", check=UNIT_RIGHT_OPEN, resume="trajectory"
    )
    scheduler: Scheduler = knob(
        "cosine",
        "learning-rate schedule",
        flag="lr-scheduler-type",
        aliases=["scheduler"],
        resume="trajectory",
    )
    epochs: float = knob(
        3.0,
        "passes over the training data",
        flag="num-train-epochs",
        aliases=["epochs"],
        check=FINITE_POSITIVE,
        resume="trajectory",
    )
    max_steps: int | None = knob(
        None,
        "stop after this many optimizer steps (wins over the epochs)",
        check=AT_LEAST_1,
        resume="trajectory",
    )
    batch_size: int = knob(
        4,
        "samples per device per micro-batch",
        flag="per-device-train-batch-size",
        aliases=["batch-size", "batch"],
        check=AT_LEAST_1,
        resume="trajectory",
    )
    grad_accum: int = knob(
        1,
        "micro-batches per optimizer step",
        flag="gradient-accumulation-steps",
        aliases=["grad-accum"],
        check=AT_LEAST_1,
        resume="trajectory",
    )
    max_grad_norm: float = knob(1.0, "clip the gradient norm to this", check=POSITIVE, resume="trajectory")
    seed: int = knob(0, "seed of the data order, dropout and new weights", check=SEED, resume="trajectory")
    bf16: bool = knob(False, "bf16 mixed precision on a GPU")
    tf32: bool = knob(False, "TF32 matrix products on a GPU")
    log_every: int = knob(
        5,
        "optimizer steps between logged lines",
        flag="logging-steps",
        aliases=["log-every"],
        check=AT_LEAST_1,
    )
    save_every: int | None = knob(
        None,
        "optimizer steps between resumable checkpoints; none: only the final adapter",
        flag="save-steps",
        aliases=["save-every"],
        check=AT_LEAST_1,
    )
    eval_every: int | None = knob(
        None,
        "optimizer steps between validation-loss passes (the best adapter is kept)",
        flag="eval-steps",
        aliases=["eval-every"],
        check=AT_LEAST_1,
    )
    eval_before: bool = knob(True, "score the untuned model first")
    eval_after: bool = knob(True, "score the tuned model on the test split", negatives=["no-eval"])
    max_new_tokens: int | None = knob(
        None, "tokens generated per answer; none: 8 for VQA, 128 for reports", check=AT_LEAST_1
    )
    grad_checkpointing: bool = knob(
        False,
        "recompute activations in backward (less memory)",
        flag="gradient-checkpointing",
        aliases=["grad-checkpointing"],
    )
    fused_norms: bool = knob(True, "the fused Triton norm kernel for ln on a GPU")
    group_by_length: bool = knob(
        False,
        "batch training samples of like token count together, so little compute goes to padding",
        resume="trajectory",
    )
    dataloader_num_workers: int = knob(
        0,
        "processes that build training batches (image decoding, the image processor) beside the loop; 0: in it",
        aliases=["num-workers"],
        check=(lambda v: v >= 0, "at least 0"),
    )
    load_4bit: bool = knob(
        False, "4-bit NF4 frozen weights (needs the 4bit extra)", flag="4bit", aliases=["load-in-4bit"]
    )
    dtype: Dtype = knob(
        "auto",
        "dtype of the frozen weights; auto: the checkpoint's own on a GPU (bf16 for an fp32 one), fp32 on a CPU",
        resume="trajectory",
    )
    fsdp: bool = knob(False, "FSDP2 full shard over --num-processes, one unit per decoder layer")
    auto_fit: bool = knob(
        True,
        "on a GPU, choose 4-bit, activation checkpointing and the micro-batch (with accumulation to the "
        "recipe's batch) from the memory planner and the free memory; on the CPU, checkpointing when the host "
        "memory needs it; settings you give are kept",
    )
    max_gpu_memory: float | None = knob(
        None, "cap this process's GPU memory at this many GiB (a shared card)", check=POSITIVE, metavar="GIB"
    )
    torch_compile: bool = knob(
        False,
        "compile the training forward (each decoder block once; evaluation stays eager)",
        aliases=["compile"],
    )
    torch_compile_backend: str = knob("inductor", "torch.compile backend for --torch-compile")
    on_invalid: OnInvalid = knob(
        "raise",
        "a bad record stops the run (raise) or is skipped and listed in RUN_DIR/rejected.jsonl (report)",
    )
    report_to: tuple[Tracker, ...] = knob(
        ("tensorboard",),
        "experiment trackers, comma-separated (none: metrics.jsonl only)",
        metavar="tensorboard,wandb,mlflow",
    )
    method_options: MethodOptions = field(default_factory=MethodOptions)
    # The settings the user gave (file, flags, a caller's overrides): the fast path keeps them as given.
    explicit: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # The Python API takes a datasets.Dataset (or DatasetDict): it is saved once, and the run reads the copy.
        for name in ("dataset", "eval_dataset"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str | Path):
                from medtune.tuning.datasets import in_memory, saved_dataset

                if not in_memory(value):
                    raise UsageError(
                        f"{name} must be a path or a datasets.Dataset / DatasetDict, got {type(value).__name__}"
                    )
                setattr(self, name, saved_dataset(value, self.columns, self.image_folder))
            elif isinstance(value, Path):
                setattr(self, name, str(value))
        problems = check_values(self)
        if self.fsdp and self.load_4bit:
            problems.append(
                "--fsdp with --4bit is not supported (NF4 weights are not sharded per parameter); drop one of them"
            )
        if self.fsdp and self.save_every:
            problems.append(
                "--fsdp with --save-steps is not supported yet (sharded optimizer state needs a distributed "
                "checkpoint); drop --save-steps, the final adapter is still saved"
            )
        if self.fsdp and self.torch_compile:
            problems.append("--torch-compile with --fsdp is not supported yet; drop one of them")
        if problems:
            raise UsageError("; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        """Return the config as plain JSON-able data."""
        return dataclasses.asdict(self)


SETTINGS = (TrainConfig, MethodOptions)  # the classes whose knobs are run settings
RESUME_IDENTITY = (
    "family",
    "method",
    "preset",
    "paradigm",
    "method_options",
    *(f.name for f in knobs(TrainConfig) if f.metadata["resume"] == "identity"),
)
RESUME_TRAJECTORY = tuple(f.name for f in knobs(TrainConfig) if f.metadata["resume"] == "trajectory")


def recipe_of(preset: str, model_path: str | None) -> str:
    """Return the recipe a run uses: "demo" for a built-in demo model, else "paper"."""
    return "demo" if preset.startswith("tiny-") and not model_path else "paper"


def recipe_defaults(family: str, method: str, recipe: str) -> dict[str, Any]:
    """Return the settings a recipe sets (the rest keep TrainConfig's defaults)."""
    if recipe == "demo":
        return {**DEMO_RECIPE, "lr": DEMO_LR_MISS if family == "miss" else DEMO_LR.get(method, 1e-3)}
    return dict(PAPER_RECIPES.get(family, {}))


def resolve_config(
    family: str,
    method: str,
    preset: str,
    paradigm: str,
    overrides: dict[str, Any],
    config_file: Path | None = None,
) -> TrainConfig:
    """Return the config: recipe defaults, then the config file, then ``overrides`` (later wins)."""
    settings = read_config(config_file) if config_file is not None else {}
    for key, given in (("preset", preset), ("paradigm", paradigm)):
        if key in settings and settings.pop(key) != given:
            raise UsageError(f"config file {config_file} sets {key}, and the command line another {key}")
    names = key_table(SETTINGS)  # a Python caller may spell a setting as a flag does (learning_rate)
    given = {(names[k].name if k in names else k): v for k, v in overrides.items() if v is not None}
    overrides = {**settings, **given}
    recipe = recipe_of(preset, overrides.get("model_path"))
    values = {**recipe_defaults(family, method, recipe), **overrides}
    option_names = {f.name for f in dataclasses.fields(MethodOptions)}
    options = MethodOptions(**{k: values.pop(k) for k in list(values) if k in option_names})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:  # only a Python caller's overrides can get here: files and flags are checked by name
        raise UsageError(f"unknown setting(s) {', '.join(unknown)}")
    return TrainConfig(
        family=family,
        method=method,
        preset=preset,
        paradigm=paradigm,
        recipe=recipe,
        method_options=options,
        explicit=tuple(sorted(overrides)),
        **values,
    )


def read_config(path: Path) -> dict[str, Any]:
    """Return the settings of a TOML or YAML config file as {field name: typed value} (plus preset/paradigm).

    Keys are the flags' names with underscores, Hugging Face's (``learning_rate``) or medtune's (``lr``).
    """
    path = Path(path)
    where = f"config file {path}"
    text = _config_text(path, where)
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml_load(text)
        except ValueError as err:  # yaml.YAMLError
            raise UsageError(f"{where} is not valid YAML ({err}); fix it there") from None
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise UsageError(f"{where} holds no mapping of settings (write one `key: value` per line)")
    elif path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise UsageError(f"{where} is not valid TOML ({err}); fix it there") from None
    else:
        raise UsageError(f"{where}: name it .toml, .yaml or .yml so its format is known")
    for key in data:
        reason = NOT_IN_FILES.get(str(key).replace("-", "_"))
        if reason is not None:
            raise UsageError(f"{where} sets {key}, but {reason}; remove {key} from the file")
    settings = read_settings(data, SETTINGS, where, extra=RUN_KEYS)
    for key in RUN_KEYS:
        if key in settings and not isinstance(settings[key], str):
            raise UsageError(f"{where}: {key} must be a string, got {settings[key]!r}")
    return settings


def _config_text(path: Path, where: str) -> str:
    """Return the text of a config file; a folder, a missing or unreadable file, or non-UTF-8 bytes raise a sentence."""
    what = "pass a .toml or .yaml file of settings"
    if path.is_dir():
        inside = sorted(p for p in path.iterdir() if p.suffix in (".toml", ".yaml", ".yml"))
        hint = f", such as --config {inside[0]}" if inside else ""
        raise UsageError(f"{where} is a folder, not a file; {what}{hint}")
    if not path.exists():
        raise UsageError(f"{where} does not exist; {what}")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UsageError(
            f"{where} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            "save it as UTF-8"
        ) from None
    except OSError as err:
        raise UsageError(f"{where} cannot be read ({err.strerror or err}); {what} you can read") from None


def yaml_load(text: str) -> Any:
    """Return a YAML document's data, reading ``1e-4`` as a number (YAML 1.2) where PyYAML's 1.1 reads a string."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    float_pattern = re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", float_pattern, list("-+0123456789."))
    try:
        return yaml.load(text, Loader=Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{problem}{at}") from None


def config_keys() -> list[str]:
    """Return every key a config file may hold."""
    return [*RUN_KEYS, *(key for cls in SETTINGS for f in knobs(cls) for key in keys_of(f))]
