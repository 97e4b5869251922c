"""Run settings come from one table: flags, TOML/YAML keys and --set agree, and bad values are one sentence."""

from __future__ import annotations

import dataclasses

import pytest

from medtune.tuning.cli import build_parser, main
from medtune.tuning.knobs import flag_of, keys_of, knobs
from medtune.tuning.methods import MethodOptions
from medtune.tuning.recipes import RESUME_TRAJECTORY, TrainConfig, read_config, resolve_config


def resolved(argv: list[str]) -> TrainConfig:
    """Return the config `medtune train` would run with for ``argv``, without training."""
    from medtune.tuning.commands.train import command_settings, validate

    args = build_parser().parse_args(["train", *argv])
    overrides = command_settings(args)
    preset, paradigm = validate(args)
    return resolve_config(args.family, args.method, preset, str(paradigm), overrides)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('method = "lora"', "sets method, but the method is the command's second argument"),
        ('lr = "fast"', "lr must be a number, got the string 'fast'"),
        ('epochs = "3"', "epochs must be a number, got the string '3'; write 3 without quotes"),
        ("batch_size = 2.5", "batch_size must be a whole number, got 2.5"),
        (
            'grad_checkpointing = "no"',
            "must be true or false, got the string 'no'; write false without quotes",
        ),
        ('scheduler = "cosin"', "scheduler must be one of cosine, linear, constant, got the string 'cosin'"),
        ("learning_rate = 0.1\nlr = 0.2", "learning_rate and lr are the same setting (--learning-rate)"),
        ('report_to = ["tensorboard", "neptune"]', "report_to must be one of tensorboard, wandb, mlflow"),
        ("lr = 2", "--learning-rate/--lr must be in (0, 1), got 2.0"),
        ('paradigm = "F,F,PEFT"', "has 3 states but family 'llava' has 4 groups"),
    ],
)
def test_bad_config_file_values_are_one_sentence(text, expected, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(text + "\n")
    out = tmp_path / "runs"
    assert main(["train", "llava", "ln", "--config", str(config), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
    assert not out.exists()


def test_toml_yaml_and_flags_resolve_alike_with_flags_winning(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'learning_rate = 1e-4\nlora_targets = "q_proj"\nnum_train_epochs = 2\nparadigm = "F,F,PEFT,T"\n'
    )
    yaml = tmp_path / "run.yaml"
    yaml.write_text("learning_rate: 1e-4\nlora_targets: q_proj\nepochs: 2\nparadigm: F,F,PEFT,T\n")
    a = resolved(["llava", "lora", "--config", str(toml)])
    b = resolved(["llava", "lora", "--config", str(yaml)])
    assert a == b
    assert (a.lr, a.epochs, a.method_options.lora_targets, a.paradigm) == (
        1e-4,
        2.0,
        ("q_proj",),
        "F,F,PEFT,T",
    )
    c = resolved(["llava", "lora", "--config", str(yaml), "--lr", "3e-4", "--paradigm", "F,F,PEFT,F"])
    assert (c.lr, c.paradigm) == (3e-4, "F,F,PEFT,F")
    d = resolved(["llava", "lora", "--learning-rate", "3e-4", "--set", "lr=5e-4", "--set", "bf16=true"])
    assert (d.lr, d.bf16) == (5e-4, True)


def test_hugging_face_names_and_short_names_set_the_same_field():
    hf = resolved(
        ["llava", "ln", "--per-device-train-batch-size", "3", "--gradient-accumulation-steps", "2",
         "--num-train-epochs", "1.5", "--lr-scheduler-type", "linear", "--save-steps", "4", "--logging-steps", "2",
         "--gradient-checkpointing", "--bf16", "--tf32", "--report-to", "tensorboard,mlflow"]
    )  # fmt: skip
    short = resolved(
        ["llava", "ln", "--batch-size", "3", "--grad-accum", "2", "--epochs", "1.5", "--scheduler", "linear",
         "--save-every", "4", "--log-every", "2", "--grad-checkpointing", "--bf16", "--tf32",
         "--set", "report_to=tensorboard,mlflow"]
    )  # fmt: skip
    assert hf == short
    assert (hf.batch_size, hf.grad_accum, hf.epochs, hf.scheduler) == (3, 2, 1.5, "linear")
    assert hf.report_to == ("tensorboard", "mlflow") and hf.grad_checkpointing and hf.bf16
    assert not resolved(["llava", "ln", "--no-eval", "--no-bf16"]).eval_after


def test_every_setting_is_a_flag_and_a_config_key(tmp_path):
    parser_flags = set()
    for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions:
        parser_flags.update(action.option_strings)
    for cls in (TrainConfig, MethodOptions):
        for f in knobs(cls):
            assert flag_of(f) in parser_flags and f.metadata["help"], f.name
            assert f.name in keys_of(f)
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {
        "family",
        "method",
        "preset",
        "paradigm",
        "recipe",
        "explicit",  # derived: the settings the user gave
    }
    assert names - {f.name for f in knobs(TrainConfig)} == {"method_options"}
    assert {f.name for f in dataclasses.fields(MethodOptions)} == {f.name for f in knobs(MethodOptions)}
    assert {"lr", "batch_size", "epochs", "seed"} <= set(RESUME_TRAJECTORY)


def test_help_shows_the_defaults_of_the_named_run(capsys):
    with pytest.raises(SystemExit):
        main(["train", "llava", "ln", "--help"])
    demo = " ".join(capsys.readouterr().out.split())
    assert (
        "peak learning rate (default: 0.01)" in demo and "passes over the training data (default: 6)" in demo
    )
    with pytest.raises(SystemExit):
        main(["train", "miss", "lora", "--model-path", "x", "--help"])
    paper = " ".join(capsys.readouterr().out.split())
    assert "peak learning rate (default: 2e-05)" in paper and "(default: 120)" in paper
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    general = " ".join(capsys.readouterr().out.split())
    assert "recipe default: demo" in general and "paper llava 3, miss 120" in general


def test_yaml_reads_exponents_as_numbers_and_quoted_ones_as_strings(tmp_path):
    path = tmp_path / "run.yml"
    path.write_text("lr: 1e-4\nmax_steps: 7\n")
    assert read_config(path) == {"lr": 1e-4, "max_steps": 7}
    path.write_text("lr: '1e-4'\n")
    with pytest.raises(ValueError, match="lr must be a number, got the string '1e-4'"):
        read_config(path)


def test_params_spells_its_settings_as_train_does():
    commands = build_parser()._subparsers._group_actions[0].choices
    spellings = {
        name: {s for a in commands[name]._actions for s in a.option_strings} for name in ("train", "params")
    }
    shared = {"--4bit", "--per-device-train-batch-size", "--batch-size", "--gradient-checkpointing", "--lora-rank",
              "--lora-targets", "--prefix-tokens", "--no-prefix-projection"}  # fmt: skip
    assert shared <= spellings["params"] & spellings["train"]
    args = commands["params"].parse_args(
        ["llava", "lora", "--batch", "2", "--4bit", "--lora-targets", "q_proj"]
    )
    assert (args.batch_size, args.load_4bit, args.lora_targets) == (2, True, ("q_proj",))


def test_python_callers_may_spell_settings_as_the_flags_do():
    cfg = resolve_config("llava", "lora", "tiny-llava", "F,F,PEFT,F", {"learning_rate": 1e-4, "lora_rank": 2})
    assert (cfg.lr, cfg.method_options.lora_rank) == (1e-4, 2)
    with pytest.raises(ValueError, match="unknown setting"):
        resolve_config("llava", "ln", "tiny-llava", "F,F,PEFT,F", {"learning_rat": 1e-4})


def test_report_to_none_means_no_tracker(tmp_path):
    assert resolved(["llava", "ln", "--report-to", "none"]).report_to == ()
    config = tmp_path / "run.toml"
    config.write_text('report_to = "none"\n')
    assert read_config(config) == {"report_to": ()}
    assert resolved(["llava", "ln", "--report-to", "wandb,mlflow"]).report_to == ("wandb", "mlflow")
