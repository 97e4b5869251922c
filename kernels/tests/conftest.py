"""Every kernels test runs the real Triton kernels through Triton's interpreter on the CPU."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _triton_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    # medtune.kernels reads TRITON_INTERPRET at call time, so setting it here (nox also sets it)
    # is enough to route CPU tensors through the same kernels the GPU compiles.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
