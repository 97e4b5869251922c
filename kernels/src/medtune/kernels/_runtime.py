"""Where a norm runs (compiled Triton, Triton's interpreter, or torch) and a trace of kernel launches."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch

Backend = Literal["triton", "interpreter", "torch"]
_TRUE = {"1", "true", "yes", "on"}


def interpreting() -> bool:
    """Return True when TRITON_INTERPRET asks for Triton's interpreter, read at call time (not import time)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE


# Asked once, at import: a module search costs tens of microseconds and every norm call asks. A plain constant
# (not a cached function) is also what a compiled graph can read without tracing into the cache wrapper.
_TRITON_FOUND = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """Return True when the triton package can be imported on this platform."""
    return _TRITON_FOUND


def backend_for(x: torch.Tensor) -> Backend:
    """Return which implementation runs a norm over `x` (any shape): Triton on CUDA, interpreter, or torch."""
    if x.device.type == "meta" or not triton_available():
        return "torch"
    if interpreting():
        return "interpreter"
    return "triton" if x.is_cuda else "torch"


@dataclass(frozen=True)
class Launch:
    """One kernel launch: its name, grid, compile-time switches and the scratch buffers it was given."""

    kernel: str
    grid: tuple[int, ...]
    flags: dict[str, bool] = field(default_factory=dict)
    buffers: tuple[str, ...] = ()


_traces: list[list[Launch]] = []


@contextlib.contextmanager
def _collecting(open_lists: list[list]) -> Iterator[list]:
    """Yield a fresh list that is in `open_lists` (so launchers append to it) until the block ends."""
    collected: list = []
    open_lists.append(collected)
    try:
        yield collected
    finally:
        open_lists.remove(collected)


def trace_launches() -> contextlib.AbstractContextManager[list[Launch]]:
    """Return a context yielding a list of every kernel launch made inside the block (tests see skipped work)."""
    return _collecting(_traces)


@dataclass(frozen=True)
class KernelCall:
    """A launch captured instead of run: the kernel, its grid, and the arguments the launcher gave it."""

    kernel: DualKernel
    grid: tuple[int, ...]
    args: tuple
    kwargs: dict


_captures: list[list[KernelCall]] = []


def capture_calls() -> contextlib.AbstractContextManager[list[KernelCall]]:
    """Return a context yielding a list of the kernel calls made inside the block, recorded and not run.

    `medtune.kernels.resources` drives the launchers with CPU tensors this way to compile their
    exact argument lists for a GPU that this machine need not have.
    """
    return _collecting(_captures)


def record_launch(launch: Launch) -> None:
    """Append `launch` to every open trace; costs one list check when nobody is tracing."""
    for launches in _traces:
        launches.append(launch)


class DualKernel:
    """A Triton kernel built on first use as compiled JIT or interpreted, whichever TRITON_INTERPRET asks now.

    `triton.jit` decides at decoration (import) time; tests flip the variable at run time, so both
    flavours are built lazily from the same Python function.
    """

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self._compiled = None
        self._interpreted = None

    def __getitem__(self, grid: tuple[int, ...]):
        if _captures:
            calls = _captures[-1]
            return lambda *args, **kwargs: calls.append(KernelCall(self, grid, args, kwargs))
        if interpreting():
            if self._interpreted is None:
                from triton.runtime.interpreter import InterpretedFunction

                self._interpreted = InterpretedFunction(self.fn)
            return _explain_interpreter_errors(self._interpreted[grid])
        if self._compiled is None:
            from triton.runtime.jit import JITFunction

            self._compiled = JITFunction(_with_compiled_helpers(self.fn))
        return self._compiled[grid]


def _with_compiled_helpers(fn: Callable) -> Callable:
    """Return `fn`, or a twin whose module globals hold compiled versions of any interpreted jit helpers.

    Triton fixes the flavour of `@triton.jit` helpers (such as `tl.standard._sum_combine`, the
    kernels' reduction) when they are imported. A process that imported them under TRITON_INTERPRET=1
    and then compiles (medtune.kernels.resources, the tests under nox) needs compiled ones, which the
    code generator looks up in the kernel's globals.
    """
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    helpers = {k: v for k, v in fn.__globals__.items() if isinstance(v, InterpretedFunction)}
    if not helpers:
        return fn
    globals_ = {**fn.__globals__, **{k: JITFunction(v.fn) for k, v in helpers.items()}}
    twin = types.FunctionType(fn.__code__, globals_, fn.__name__, fn.__defaults__, fn.__closure__)
    twin.__module__, twin.__qualname__ = fn.__module__, fn.__qualname__
    twin.__annotations__, twin.__kwdefaults__ = fn.__annotations__, fn.__kwdefaults__  # tl.constexpr marks
    return twin


def _explain_interpreter_errors(launch: Callable) -> Callable:
    """Return `launch` re-raising a known Triton-interpreter/numpy incompatibility as an actionable error."""

    def run(*args, **kwargs):
        try:
            return launch(*args, **kwargs)
        except Exception as err:
            if "only 0-dimensional arrays can be converted to Python scalars" not in str(err):
                raise
            import numpy
            import triton

            raise RuntimeError(
                f"Triton {triton.__version__}'s interpreter cannot run medtune's kernels with numpy "
                f"{numpy.__version__} (it turns a program id into a 1-element array, which numpy >= 2.4 "
                "refuses to use as an index). Install triton>=3.9 or numpy<2.4 for TRITON_INTERPRET=1; "
                "compiled GPU runs are not affected."
            ) from err

    return run


def dual_kernel(fn: Callable) -> DualKernel:
    """Return `fn` wrapped as a DualKernel (use as a decorator in place of `triton.jit`)."""
    return DualKernel(fn)
