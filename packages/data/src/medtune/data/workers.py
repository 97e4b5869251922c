"""Collating in DataLoader worker processes without losing the one-sentence errors of bad input.

A worker's exception reaches the main process re-raised by torch with the worker's traceback folded into its
message, and a DataError cannot even be rebuilt there (it is made from a Rejection, not a string). So a
collate function run in workers returns the error as data instead, and the training loop raises it again,
whole, with raise_carried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medtune.data.images import ImageLoadError
from medtune.data.records import DataError, Rejection

# What a collator raises for bad input: a bad record, an image that does not decode, a sample too long.
CARRIED = (DataError, ImageLoadError, ValueError)


@dataclass(frozen=True)
class CarriedError:
    """An input error raised while collating in a worker, in a form that pickles (kind, message, rejection)."""

    kind: str
    message: str
    rejection: Rejection | None = None

    @classmethod
    def of(cls, error: BaseException) -> CarriedError:
        """Return the carried form of error."""
        if isinstance(error, DataError):
            return cls("data", str(error), error.rejection)
        return cls("image" if isinstance(error, ImageLoadError) else "value", str(error))

    def error(self) -> BaseException:
        """Return the exception again, of its own class and with its own sentence."""
        if self.kind == "data" and self.rejection is not None:
            return DataError(self.rejection)
        return ImageLoadError(self.message) if self.kind == "image" else ValueError(self.message)


class CarryErrors:
    """Wrap a collate function so that, in a worker process, its input errors come back as a CarriedError."""

    def __init__(self, collate: Callable):
        self.collate = collate

    def __call__(self, records: list):
        try:
            return self.collate(records)
        except CARRIED as error:
            return CarriedError.of(error)


def raise_carried(batch):
    """Return batch, or raise the input error a worker carried back in its place."""
    if isinstance(batch, CarriedError):
        raise batch.error()
    return batch
