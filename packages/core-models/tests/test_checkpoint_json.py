"""A checkpoint's config.json or processor config that is not a JSON object: CheckpointError naming the file."""

from __future__ import annotations

import pytest

from medtune.core_models import build
from medtune.core_models.errors import CheckpointError, read_json


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            '{"architectures": ["LlavaForConditionalGeneration"],',
            "is not valid JSON (Expecting property name",
        ),
        ("[1, 2]", "holds a JSON list, not an object"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
    ],
)
def test_bad_config_json_is_named_with_what_is_wrong(tmp_path, text, words):
    file = tmp_path / "config.json"
    file.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CheckpointError, match=r"config\.json") as err:
        read_json(file)
    assert words in str(err.value) and str(file) in str(err.value)


def test_load_with_a_preset_names_the_broken_config(tmp_path):
    (tmp_path / "config.json").write_text('{"dtype": "float16",,}')
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON .* line 1, column 21"):
        build.load("tiny-llava", model_path=tmp_path)
