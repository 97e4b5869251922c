"""`medtune eval --model-path DIR` alone, where DIR's config.json is damaged: one sentence naming it, exit 2."""

from __future__ import annotations

import pytest

from medtune.tuning.cli import main


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"architectures": [', "is not valid JSON (Expecting value: line 1 column 20"),
        (b'{"model_type": "caf\xe9"}', "is not valid JSON ('utf-8' codec can't decode byte 0xe9"),
    ],
)
def test_a_base_whose_config_json_does_not_parse_is_named(small_demo, tmp_path, capsys, content, words):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_bytes(content)
    assert main(["eval", "--model-path", str(base), "--dataset", str(small_demo), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{base / 'config.json'} {words}" in err, err
    assert "copy the checkpoint's config.json again" in err


def test_a_config_json_that_is_a_list_asks_for_the_preset(small_demo, tmp_path, capsys):
    (tmp_path / "config.json").write_text("[]")
    assert main(["eval", "--model-path", str(tmp_path), "--dataset", str(small_demo), "--quiet"]) == 2
    assert "pass --preset" in capsys.readouterr().err
