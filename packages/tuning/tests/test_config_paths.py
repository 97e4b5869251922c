"""`medtune train --config PATH` where PATH is not a readable settings file: one sentence, exit 2, nothing run."""

from __future__ import annotations

import pytest

from medtune.tuning.cli import main


def _folder(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "run.toml").write_text("lr = 1e-4\n")
    return folder, [f"config file {folder} is a folder, not a file", f"--config {folder / 'run.toml'}"]


def _empty_folder(tmp_path):
    (tmp_path / "run.toml").mkdir()  # named like a file, but a folder
    return tmp_path / "run.toml", ["is a folder, not a file; pass a .toml or .yaml file of settings"]


def _missing(tmp_path):
    path = tmp_path / "nowhere" / "run.toml"
    return path, [f"config file {path} does not exist; pass a .toml or .yaml file of settings"]


def _toml_syntax(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("epochs = 2\nlr = \n")
    return path, [f"config file {path} is not valid TOML", "line 2, column 6"]


def _yaml_syntax(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 2\nlr: [1e-4\n")
    return path, [f"config file {path} is not valid YAML", "expected ',' or ']'", "line 3"]


def _yaml_indent(tmp_path):
    path = tmp_path / "run.yml"
    path.write_text("epochs: 2\n  lr: 1e-4\n")
    return path, [f"config file {path} is not valid YAML", "line 2, column 5"]


def _latin1(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes('method_note = "Universit\u00e4t"\n'.encode("latin-1"))
    return path, [f"config file {path} is not UTF-8 text (byte 0xe4 at offset 24); save it as UTF-8"]


CASES = {
    "a folder holding configs": _folder,
    "a folder named run.toml": _empty_folder,
    "a missing file": _missing,
    "a TOML syntax error": _toml_syntax,
    "a YAML syntax error": _yaml_syntax,
    "a YAML indentation error": _yaml_indent,
    "latin-1 bytes": _latin1,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_config_path_that_is_not_a_settings_file_is_one_sentence(case, tmp_path, capsys):
    config, words = CASES[case](tmp_path)
    out = tmp_path / "runs"
    argv = ["train", "llava", "ln", "--max-steps", "2", "--config", str(config), "--output-dir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("medtune train: error: config file ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    assert not out.exists()  # refused before a run directory was made


def test_a_utf8_byte_order_mark_is_read(tmp_path):
    from medtune.tuning.recipes import read_config

    path = tmp_path / "run.toml"
    path.write_bytes(b"\xef\xbb\xbfepochs = 3\n")
    assert read_config(path)["epochs"] == 3
