"""A checkpoint folder's weight files: check them before loading, and read their tensors one at a time."""

from __future__ import annotations

import ctypes
import json
import struct
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from safetensors import safe_open

from medtune.core_models.errors import CheckpointError

INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
# config.json names a dtype these ways (transformers 5 writes `dtype`, 4.x wrote `torch_dtype`).
DTYPE_NAMES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def weight_files(folder: Path) -> dict[str, Path]:
    """Return tensor name -> the file holding it, from the index json or the single weights file's header.

    Raises CheckpointError when the folder has no weights or its index names a shard that is not there.
    """
    folder = Path(folder)
    for index_name in INDEXES:
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as err:
                raise CheckpointError(
                    f"{index} is not a weight index (no readable weight_map: {err}); write the checkpoint "
                    "again with save_pretrained"
                ) from None
            files = {name: folder / file for name, file in weight_map.items()}
            for name, file in files.items():
                if not file.is_file():
                    raise CheckpointError(
                        f"{index} lists shard {file.name} (tensor {name}) but {file} is missing; copy the "
                        "whole checkpoint folder again"
                    )
            return files
    for single in SINGLE_FILES:
        file = folder / single
        if file.is_file():
            if single.endswith(".safetensors"):
                return dict.fromkeys(safetensors_header(file), file)
            return dict.fromkeys(torch.load(file, map_location="meta", weights_only=True, mmap=True), file)
    raise CheckpointError(
        f"{folder} has no weights (model.safetensors, pytorch_model.bin, or a sharded index json); point at "
        "the checkpoint folder itself"
    )


def safetensors_header(file: Path) -> dict[str, dict]:
    """Return a safetensors file's tensor entries (dtype, shape, data_offsets) without reading any tensor.

    Raises CheckpointError naming the file and the first tensor whose bytes are not all in the file (a copy
    cut short), or a header that cannot be read.
    """
    size = file.stat().st_size
    with open(file, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{file} is truncated ({size} bytes, no header); copy the file again")
        (header_len,) = struct.unpack("<Q", prefix)
        if 8 + header_len > size:
            raise CheckpointError(
                f"{file} is truncated: its header alone needs {header_len} bytes, the file has {size}; copy "
                "the file again"
            )
        try:
            header = json.loads(f.read(header_len))
        except ValueError as err:
            raise CheckpointError(
                f"{file} has an unreadable safetensors header ({err}); copy it again"
            ) from None
    header.pop("__metadata__", None)
    data_bytes = size - 8 - header_len
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][1]):
        end = entry["data_offsets"][1]
        if end > data_bytes:
            raise CheckpointError(
                f"{file} is truncated: tensor {name} needs bytes up to {end} of the data section, which holds "
                f"{data_bytes}; copy the file again (the checkpoint was cut short)"
            )
    return header


def check_files(folder: Path) -> dict[str, Path]:
    """Return tensor name -> file after checking every safetensors shard's header against its size."""
    files = weight_files(folder)
    for file in sorted(set(files.values())):
        if file.suffix == ".safetensors":
            safetensors_header(file)
    return files


class LazyTensors(Mapping):
    """Tensor name -> tensor, each read from its file only when asked for (one tensor in memory at a time)."""

    def __init__(self, entries: Mapping[str, tuple[Path, str]]):
        # entries: a name -> (the file holding it, its name in that file)
        self.entries = dict(entries)

    def __getitem__(self, name: str) -> torch.Tensor:
        file, stored = self.entries[name]
        return read_tensor(file, stored)

    def __contains__(self, name: object) -> bool:
        return name in self.entries  # without reading the tensor, as Mapping's default would

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


@contextmanager
def open_shard(file: Path):
    """Yield ``file`` opened with safe_open, reading each tensor with pread where safetensors can.

    Memory-mapped (safe_open's default), every page a read touches stays resident until the file closes, so
    reading a shard tensor by tensor would hold the whole shard; with pread a tensor's bytes live only as long
    as the tensor. A safetensors without the pread backend maps the file as before.
    """
    try:
        handle = safe_open(file, framework="pt", device="cpu", backend="pread")
    except TypeError:
        handle = safe_open(file, framework="pt")
    with handle as shard:
        yield shard


def read_tensor(file: Path, name: str) -> torch.Tensor:
    """Return one tensor from a safetensors or .bin file (a .bin is memory-mapped, not read whole)."""
    if file.suffix == ".safetensors":
        with open_shard(file) as shard:
            return shard.get_tensor(name)
    return torch.load(file, map_location="cpu", weights_only=True, mmap=True)[name]


def config_dtype(config: dict) -> torch.dtype | None:
    """Return the dtype a config.json says its weights are stored in, or None when it names none."""
    name = config.get("dtype") or config.get("torch_dtype")
    if name is None:
        text = config.get("text_config") or {}
        name = text.get("dtype") or text.get("torch_dtype")
    if name is None:
        return None
    dtype = DTYPE_NAMES.get(str(name).removeprefix("torch."))
    if dtype is None:
        raise CheckpointError(
            f"config.json stores its weights as {name!r}, which medtune cannot load; convert the checkpoint "
            f"to one of {', '.join(DTYPE_NAMES)}"
        )
    return dtype


@contextmanager
def pread_slices(files: Mapping[str, Path]):
    """Yield tensor name -> a lazy safetensors slice read with pread, or None when that cannot be done.

    transformers opens every shard memory-mapped for the whole load, and each page it reads stays resident
    until the end, so the host peak grows by the whole checkpoint. Read with pread instead (safetensors' own
    backend, the one transformers uses where mmap does not suit), a tensor's bytes live only while it loads.
    """
    if not files or any(f.suffix != ".safetensors" for f in files.values()):
        yield None
        return
    with ExitStack() as stack:
        slices = {}
        try:
            for file in sorted(set(files.values())):
                shard = stack.enter_context(safe_open(file, framework="pt", device="cpu", backend="pread"))
                for name in shard.keys():  # noqa: SIM118  (safe_open is not iterable)
                    slices[name] = shard.get_slice(name)
        except TypeError:  # a safetensors without the pread backend: transformers reads its own way
            slices = None
        yield slices


def _glibc():
    """Return glibc's (mallopt, malloc_trim), or None outside glibc."""
    try:
        libc = ctypes.CDLL(None)
        return libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None


M_MMAP_THRESHOLD = -3
TENSOR_SIZED = 128 * 1024  # blocks from this size up are mapped on their own and unmapped when freed


@contextmanager
def returned_to_the_system():
    """Within the block, glibc hands every freed tensor-sized block back to the system (peak RSS = live bytes).

    Loading frees one large tensor after another; glibc's adaptive threshold would soon serve them from a heap
    it never shrinks, so the process would keep the high-water mark of every tensor read. Outside glibc,
    nothing changes.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    mallopt, trim = libc
    mallopt(M_MMAP_THRESHOLD, TENSOR_SIZED)
    try:
        yield
    finally:
        mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # where glibc's adaptive threshold settles anyway
        trim(0)


def keep_returning_freed_memory() -> None:
    """From now on, glibc hands every freed tensor-sized block back to the system (a CPU run's setting).

    A CPU training step allocates and frees tensors of tens of MB (NF4 weights dequantised per matmul,
    activations); served from glibc's heap they fragment it, and the run's peak RSS stays GBs above its live
    bytes. Measured with benchmarks/loading/bench_loading.py (0.8B LLaVA, --4bit, batch 2): whole-run peak
    4.96 GB -> 3.82 GB, for about 6% more time per step in a 4-bit linear stack (fresh pages to fault in).
    """
    libc = _glibc()
    if libc is not None:
        libc[0](M_MMAP_THRESHOLD, TENSOR_SIZED)
