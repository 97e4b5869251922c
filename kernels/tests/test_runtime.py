"""How kernel launches are routed: the interpreter's known numpy incompatibility becomes an actionable error."""

from __future__ import annotations

import pytest

from medtune.kernels._runtime import _explain_interpreter_errors


def test_old_triton_interpreter_with_new_numpy_names_the_fix():
    def launch(*args, **kwargs):
        # What Triton 3.6's interpreter raises under numpy 2.4 when a kernel ranges over a program id.
        raise RuntimeError("TypeError('only 0-dimensional arrays can be converted to Python scalars')")

    with pytest.raises(RuntimeError, match=r"triton>=3\.9 or numpy<2\.4") as info:
        _explain_interpreter_errors(launch)(1, BLOCK=2)
    assert "only 0-dimensional" in str(info.value.__cause__)


def test_other_errors_pass_through_unchanged():
    def launch(*args, **kwargs):
        raise ValueError("a kernel bug")

    with pytest.raises(ValueError, match="a kernel bug"):
        _explain_interpreter_errors(launch)()
    assert _explain_interpreter_errors(lambda *a, **k: (a, k))(1, x=2) == ((1,), {"x": 2})
