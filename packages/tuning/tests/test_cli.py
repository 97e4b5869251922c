"""The `medtune` command refuses bad input with one sentence, exit code 2 and nothing written."""

from __future__ import annotations

import pytest

from medtune.tuning.cli import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "gpt", "ln"], "unknown family 'gpt'; choose one of: llava, miss"),
        (["train", "llava", "dora"], "unknown method 'dora'; choose one of: "),
        (["train", "llava", "ln", "--paradigm", "F,F,PEFT"], "has 3 states but family 'llava' has 4 groups"),
        (["train", "llava", "ln", "--paradigm", "F,X,PEFT,F"], "unknown state(s) 'X'"),
        (["train", "miss", "ln", "--paradigm", "F,F,PEFT,F"], "has 4 states but family 'miss' has 3 groups"),
        (["train", "llava", "ln", "--preset", "gpt-9"], "unknown preset 'gpt-9'; choose one of:"),
        (["train", "llava", "ln", "--lr", "-1"], "--lr must be in (0, 1), got -1.0"),
        (
            ["train", "llava", "ln", "--batch-size", "0"],
            "--per-device-train-batch-size/--batch-size must be at least 1",
        ),
        (["train", "llava", "ln", "--set", "lr=fast"], "--set lr: expected a number, got 'fast'"),
        (
            ["train", "llava", "ln", "--set", "learnin_rate=1"],
            "unknown setting 'learnin_rate'; did you mean learning_rate?",
        ),
    ],
)
def test_bad_input_exits_2_with_a_sentence_and_writes_nothing(argv, expected, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main([*argv, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1  # one sentence, one line
    assert not out.exists()


def test_unknown_setting_in_toml_is_named(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("lr = 0.01\nlearning_rat = 3\n")
    assert (
        main(["train", "llava", "ln", "--config", str(config), "--output-dir", str(tmp_path / "runs")]) == 2
    )
    assert "unknown setting 'learning_rat'; did you mean learning_rate?" in capsys.readouterr().err
