"""Tensors in safetensors files located by their header and read or written by byte range, one at a time.

A streamed merge (merge_stream) needs each tensor's bytes alone: read by offset with pread (so they live only as
long as the tensor) and written into a shard whose header is known before any tensor exists.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from medtune.core_models.weights import LazyTensors, safetensors_header

# safetensors' dtype names (its format spec); a checkpoint holding any other is merged in memory.
STORED_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in STORED_DTYPES.items()}


class NotStreamable(Exception):
    """This merge cannot be streamed exactly; the message says why (the export merges in memory instead)."""


@dataclass(frozen=True)
class Stored:
    """One tensor in a safetensors file: where its bytes are and how they are laid out."""

    file: Path
    name: str  # its name in the file
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute byte offset of its data in the file

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def stored_entries(file: Path) -> dict[str, Stored]:
    """Return a safetensors file's tensors by name, located without reading any (NotStreamable: an odd dtype)."""
    header = safetensors_header(file)  # CheckpointError naming the file on a truncated one
    with open(file, "rb") as f:
        data = 8 + struct.unpack("<Q", f.read(8))[0]
    entries = {}
    for name, entry in header.items():
        dtype = STORED_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise NotStreamable(f"{file} stores tensor {name} as {entry['dtype']}")
        begin = data + entry["data_offsets"][0]
        entries[name] = Stored(file, name, dtype, tuple(entry["shape"]), begin)
    return entries


class Located(Mapping):
    """A LazyTensors' tensors as their places in safetensors files (Stored), so a reader takes only what it needs.

    A tensor in a .bin file (or under a dtype safetensors' header names oddly) is read whole, when asked for.
    """

    def __init__(self, lazy: LazyTensors):
        self.lazy = lazy
        self.files: dict[Path, dict[str, Stored]] = {}

    def __getitem__(self, name: str) -> Stored | torch.Tensor:
        file, stored = self.lazy.entries[name]
        if file.suffix == ".safetensors":
            if file not in self.files:
                try:
                    self.files[file] = stored_entries(file)
                except NotStreamable:
                    self.files[file] = {}
            if stored in self.files[file]:
                return self.files[file][stored]
        return self.lazy[name]

    def __contains__(self, name: object) -> bool:
        return name in self.lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.lazy)

    def __len__(self) -> int:
        return len(self.lazy)


def read_stored(stored: Stored) -> torch.Tensor:
    """Return one stored tensor, read with pread: its bytes live only as long as the tensor."""
    # By offset, as sampled() reads its 64 values: both need only the header's byte ranges, not a shard reader.
    nbytes = stored.nbytes
    fd = os.open(stored.file, os.O_RDONLY)
    try:
        data = bytearray(nbytes)
        view, done = memoryview(data), 0
        while done < nbytes:  # pread may return fewer bytes than asked for on a large read
            got = os.preadv(fd, [view[done:]], stored.begin + done)
            if got == 0:
                raise OSError(f"{stored.file} ended inside tensor {stored.name}")
            done += got
    finally:
        os.close(fd)
    if nbytes == 0:
        return torch.empty(stored.shape, dtype=stored.dtype)
    return torch.frombuffer(data, dtype=stored.dtype).reshape(stored.shape)


def sampled(stored: Stored, held: torch.dtype, samples: int) -> torch.Tensor:
    """Return ``samples`` values of a stored tensor at an even stride, in ``held`` (those values read, not the tensor)."""
    count = math.prod(stored.shape)
    step = max(1, count // samples)
    size = stored.dtype.itemsize
    with open(stored.file, "rb") as f:
        raw = b"".join(
            os.pread(f.fileno(), size, stored.begin + i * size) for i in range(0, count, step)[:samples]
        )
    values = (
        torch.frombuffer(bytearray(raw), dtype=stored.dtype) if raw else torch.empty(0, dtype=stored.dtype)
    )
    return values.to(held)


def write_safetensors(
    file: Path, names: list[str], spec: dict[str, tuple[torch.dtype, tuple[int, ...]]], tensor: Callable
) -> None:
    """Write a safetensors file of ``names`` (dtype and shape from ``spec``), asking ``tensor(name)`` for each in turn.

    The header is written first from ``spec``, then each tensor's bytes as it comes, so only one is ever held.
    Tensors are laid out widest dtype first, as safetensors lays them, so each starts aligned to its element size.
    """
    # Written by hand: safetensors' save_file takes every tensor of the file at once, which is what streaming avoids.
    order = sorted(names, key=lambda n: (-spec[n][0].itemsize, n))
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in order:
        dtype, shape = spec[name]
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {
            "dtype": DTYPE_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-aligned, as safetensors writes it
    with open(file, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in order:
            value = tensor(name)
            if value.dtype != spec[name][0] or tuple(value.shape) != spec[name][1]:
                raise RuntimeError(
                    f"merged tensor {name} is {value.dtype} {tuple(value.shape)}, planned {spec[name]}"
                )
            if value.numel():
                f.write(value.contiguous().reshape(-1).view(torch.uint8).numpy())
            del value
