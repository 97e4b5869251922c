"""medtune's user-facing errors: every one becomes a sentence and exit status 2 in the CLI.

A user error is raised as (or a subclass of) one of the classes :func:`user_errors` returns; anything else that
reaches the CLI is a medtune bug and keeps its traceback. This module imports nothing heavy, so the CLI can
name the classes without loading torch.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A bad command-line value, configuration or path; the CLI prints the message and exits with code 2."""


class AdapterError(ValueError):
    """An adapter that cannot be used with this base: corrupt, another base, another preset or method."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Return every exception class the CLI reports as a sentence (the packages' own error classes included)."""
    classes: list[type[BaseException]] = [UsageError, AdapterError]
    try:
        from medtune.data.images import ImageLoadError
        from medtune.data.records import DataError

        classes += [DataError, ImageLoadError]
    except ImportError:  # medtune-data missing: its errors cannot occur either
        pass
    try:
        from medtune.core_models.errors import CheckpointError
        from medtune.core_models.quantize import QuantizationUnavailable

        classes += [CheckpointError, QuantizationUnavailable]
    except ImportError:
        pass
    return tuple(classes)
