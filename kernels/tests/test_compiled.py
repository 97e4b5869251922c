"""The compiled (CUDA) path, checked without a GPU: every launch compiles for sm_80/sm_90 and none spills.

Triton's NVIDIA backend compiles to a cubin on any Linux machine; ptxas' resource table then says
whether a kernel keeps its row in registers, which it must to run at memory bandwidth.
"""

from __future__ import annotations

import re

import pytest
import torch

resources = pytest.importorskip("medtune.kernels.resources")


def _nvidia_backend_present() -> bool:
    try:
        resources._cuobjdump()
    except RuntimeError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _nvidia_backend_present(), reason="Triton's NVIDIA backend is absent")


@pytest.fixture(autouse=True, scope="module")
def _compiler_reachable() -> None:
    # The compile path goes through Triton internals; a Triton release that moves them makes these
    # checks impossible (said plainly), not the kernels wrong: the interpreter suite still runs.
    try:
        resources._compile(resources.capture(resources.VARIANTS[0], 64, torch.float32)[0], 90)
    except resources.TritonInternalsChanged as err:
        pytest.skip(str(err))


# The hidden sizes of the models medtune tunes: CLIP-B/BERT, LLaMA-7B, 13B (not a power of two), 70B.
MODEL_HIDDEN = (768, 4096, 5120, 8192)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "dtype", "hiddens", "max_spill"),
    [
        # Hopper, the GPU the benchmarks target: nothing may leave registers.
        (90, "bf16", MODEL_HIDDEN, 0),
        (90, "fp32", (8192,), 0),
        # Ada and Ampere: ptxas sometimes trades two registers for an 8-byte spill outside the row
        # loop (RMSNorm residual forward on sm_80, LayerNorm forward on sm_89 with Triton 3.6), which
        # costs nothing; a row that no longer fits spills hundreds of bytes (hidden 16384).
        (89, "bf16", (8192,), 16),
        (80, "bf16", (4096, 8192), 16),
    ],
)
def test_every_launch_compiles_and_keeps_its_row_in_registers(arch, dtype, hiddens, max_spill):
    found = list(resources.survey(arch, hiddens, (dtype,)))
    # One kernel per (variant, hidden): every forward/backward switch combination the autograd
    # functions can ask for compiled.
    assert len(found) == len(resources.VARIANTS) * len(hiddens)
    assert {r.variant for r in found} == {v.name for v in resources.VARIANTS}
    spilled = [(r.op, r.variant, r.hidden, r.spill_bytes) for r in found if r.spill_bytes > max_spill]
    assert spilled == []
    assert all(0 < r.registers <= 255 for r in found)


def _global_loads(variant_name: str, op: str, hidden: int) -> set[str]:
    (variant,) = [v for v in resources.VARIANTS if v.op == op and v.name == variant_name]
    (call,) = resources.capture(variant, hidden, torch.bfloat16)
    ptx = resources._compile(call, 90).asm["ptx"]
    return set(re.findall(r"ld\.global[.\w]*", ptx))


@pytest.mark.parametrize(
    ("op", "variant", "prefetch"),
    [
        ("layer_norm", "forward", False),
        ("rms_norm", "backward dx+dw", False),
        ("layer_norm", "backward dx+dw+db", True),
    ],
)
def test_rows_are_read_with_16_byte_loads_when_hidden_allows(op, variant, prefetch, monkeypatch):
    # Launches are specialised like real ones (16-divisible strides), so a bf16 row of 4096 is read
    # with 128-bit vector loads; an odd hidden size forbids them, which shows the check can fail.
    # The prefetch's row-validity mask must not cost the vector loads either.
    from medtune.kernels._triton import config

    monkeypatch.setattr(config, "backward_prefetch", lambda block: prefetch)
    assert "ld.global.v4.b32" in _global_loads(variant, op, 4096)
    assert "ld.global.v4.b32" not in _global_loads(variant, op, 4099)


def test_captured_calls_are_not_run():
    variant = resources.VARIANTS[0]
    calls = resources.capture(variant, 64, torch.float32)
    (call,) = calls
    assert call.kernel.__name__ == "_layer_norm_fwd"
    assert call.grid == (8,)
    assert call.kwargs["BLOCK"] == 64 and call.kwargs["HAS_BIAS"] is True


def test_report_exits_nonzero_and_names_spilling_kernels(capsys):
    # hidden 16384 is correct but its backward no longer fits in registers (documented in the
    # kernels README); the report must see that from the stack column, not only LOCAL.
    assert resources.main(["--hidden", "16384", "--dtype", "bf16"]) == 1
    out = capsys.readouterr().out
    assert "spill registers" in out
    assert re.search(r"layer_norm\s+backward dx\+dw\+db\s+bf16\s+16384\s+\d+\s+\d+\s+[1-9]\d*", out)
    assert resources.main(["--hidden", "768", "--dtype", "bf16"]) == 0
    assert "no kernel spills registers." in capsys.readouterr().out


def test_a_triton_without_the_compiler_internals_is_named(monkeypatch):
    import triton.runtime.jit

    monkeypatch.delattr(triton.runtime.jit, "create_function_from_signature")
    call = resources.capture(resources.VARIANTS[0], 64, torch.float32)[0]
    with pytest.raises(resources.TritonInternalsChanged, match=r"Triton 3\.\d+.* lacks the internals"):
        resources._compile(call, 90)


@pytest.mark.slow
def test_prefetching_backward_keeps_its_rows_in_registers_on_hopper(monkeypatch):
    # Holding the next row's x and dy must not push the backward into spills at the model widths.
    from medtune.kernels._triton import config

    monkeypatch.setattr(config, "backward_prefetch", lambda block: True)
    backward = tuple(v for v in resources.VARIANTS if v.backward)
    found = list(resources.survey(90, MODEL_HIDDEN, ("bf16",), backward))
    assert len(found) == len(backward) * len(MODEL_HIDDEN)
    spilled = [f"{r.op} {r.variant} @ {r.hidden}: {r.spill_bytes} B" for r in found if r.spills]
    assert not spilled, spilled
