"""The error core-models raises for a checkpoint it cannot use; the CLI turns it into one sentence."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A model folder that cannot be loaded as asked: missing or truncated files, tensors that do not match.

    The message names the folder (and the file and tensor where known) and says what to do.
    """
