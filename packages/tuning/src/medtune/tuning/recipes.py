"""Training recipes: the paper's settings and the demo's own, as one validated config."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.tuning.methods import MethodOptions
from medtune.tuning.errors import UsageError

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


@dataclass
class TrainConfig:
    """Everything a run needs, fully resolved and saved as config.json."""

    family: str
    method: str
    preset: str
    paradigm: str
    recipe: str  # "demo" or "paper"
    dataset: str | None = None  # None: the built-in demo set
    model_path: str | None = None
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 4
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    seed: int = 0
    bf16: bool = False
    tf32: bool = False
    log_every: int = 5
    eval_before: bool = True
    max_new_tokens: int | None = None  # None: 8 for VQA, 128 for reports
    task: str | None = None  # vqa or report; None: found from the dataset's layout
    vision_tower: str | None = None  # a separate CLIP folder for LLaVA-Med releases that lack one
    output_dir: str = "runs"
    save_every: int | None = None  # optimizer steps between checkpoints; None: only the final adapter
    eval_every: int | None = None  # optimizer steps between validation-loss passes (best adapter kept)
    eval_after: bool = True  # score the tuned model on the test split at the end
    grad_checkpointing: bool = False
    fused_norms: bool = True  # the Triton norm kernel for `ln` on GPU
    load_4bit: bool = False
    fsdp: bool = False  # FSDP2 full shard over --num-processes, one unit per decoder layer
    on_invalid: str = "raise"  # "report": skip bad records, list them in RUN_DIR/rejected.jsonl
    method_options: MethodOptions = field(default_factory=MethodOptions)

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.lr < 1:
            problems.append(f"--lr must be in (0, 1), got {self.lr}")
        if not 0 <= self.weight_decay < 1:
            problems.append(f"--weight-decay must be in [0, 1), got {self.weight_decay}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.scheduler not in ("cosine", "linear", "constant"):
            problems.append(f"--scheduler must be cosine, linear or constant, got {self.scheduler!r}")
        if self.epochs <= 0:
            problems.append(f"--epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.batch_size < 1 or self.grad_accum < 1:
            problems.append(
                f"--batch-size and --grad-accum must be at least 1, got {self.batch_size}, {self.grad_accum}"
            )
        if self.max_grad_norm <= 0:
            problems.append(f"--max-grad-norm must be positive, got {self.max_grad_norm}")
        for flag, value in (("save-every", self.save_every), ("eval-every", self.eval_every)):
            if value is not None and value < 1:
                problems.append(f"--{flag} must be at least 1, got {value}")
        if self.log_every < 1:
            problems.append(f"--log-every must be at least 1, got {self.log_every}")
        if self.task not in (None, "vqa", "report"):
            problems.append(f"--task must be vqa or report, got {self.task!r}")
        if self.on_invalid not in ("raise", "report"):
            problems.append(f"--on-invalid must be raise or report, got {self.on_invalid!r}")
        if self.fsdp and self.load_4bit:
            problems.append(
                "--fsdp with --4bit is not supported (NF4 weights are not sharded per parameter); drop one of them"
            )
        if self.fsdp and self.save_every:
            problems.append(
                "--fsdp with --save-every is not supported yet (sharded optimizer state needs a distributed "
                "checkpoint); drop --save-every, the final adapter is still saved"
            )
        if problems:
            raise UsageError("; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        """Return the config as plain JSON-able data."""
        return dataclasses.asdict(self)


def resolve_config(
    family: str,
    method: str,
    preset: str,
    paradigm: str,
    overrides: dict[str, Any],
    config_file: Path | None = None,
) -> TrainConfig:
    """Return the config: recipe defaults, then the TOML file, then command-line flags (later wins)."""
    recipe = "demo" if preset.startswith("tiny-") and not overrides.get("model_path") else "paper"
    values: dict[str, Any] = dict(DEMO_RECIPE if recipe == "demo" else PAPER_RECIPES[family])
    if recipe == "demo":
        values["lr"] = DEMO_LR_MISS if family == "miss" else DEMO_LR.get(method, 1e-3)
    if config_file is not None:
        values.update(read_toml(config_file))
    values.update({k: v for k, v in overrides.items() if v is not None})
    option_names = {f.name for f in dataclasses.fields(MethodOptions)}
    options = MethodOptions(**{k: values.pop(k) for k in list(values) if k in option_names})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known | option_names))}"
        )
    return TrainConfig(
        family=family,
        method=method,
        preset=preset,
        paradigm=paradigm,
        recipe=recipe,
        method_options=options,
        **values,
    )


def read_toml(path: Path) -> dict[str, Any]:
    """Return the settings of a run TOML file (keys as the command-line flags, with underscores)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"config file {path} is not valid TOML: {err}") from None
    return {k.replace("-", "_"): v for k, v in data.items()}
