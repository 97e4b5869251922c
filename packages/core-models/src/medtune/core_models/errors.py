"""The error core-models raises for a checkpoint it cannot use; the CLI turns it into one sentence."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A model folder that cannot be loaded as asked: missing or truncated files, tensors that do not match.

    The message names the folder (and the file and tensor where known) and says what to do.
    """


def read_json(file) -> dict:
    """Return the JSON object in a checkpoint's ``file`` (config.json, a processor config); CheckpointError naming
    the file, line and column when it is not one."""
    import json
    from pathlib import Path

    file = Path(file)
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing; copy the whole checkpoint folder again") from None
    except UnicodeDecodeError:
        raise CheckpointError(
            f"{file} is not UTF-8 text; copy it from the checkpoint's source again"
        ) from None
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"{file} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); fix that file "
            "or copy it from the checkpoint's source again"
        ) from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{file} holds a JSON {type(value).__name__}, not an object; copy it again")
    return value
