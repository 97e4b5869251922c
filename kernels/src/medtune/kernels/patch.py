"""Scoped, reversible swap of one model instance's norms for the fused modules (classes stay untouched)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from medtune.kernels.modules import FusedLayerNorm, FusedRMSNorm

_PROBE_TOL = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def _fused_for(module: nn.Module) -> nn.Module | str:
    """Return the fused replacement for `module`, or a sentence saying why it is left alone."""
    name = type(module).__name__
    if isinstance(module, FusedLayerNorm | FusedRMSNorm):
        return "already fused"
    if module._forward_hooks or module._forward_pre_hooks:
        return "has forward hooks, which a replacement module would silently drop"
    try:
        if isinstance(module, nn.LayerNorm):
            return FusedLayerNorm.from_module(module)
        if name.endswith("RMSNorm"):
            return FusedRMSNorm.from_module(module)
    except (TypeError, ValueError) as err:
        return str(err)
    return f"{name} is not a LayerNorm or RMSNorm over the last dimension"


def _discover_convention(original: nn.Module, fused: nn.Module) -> nn.Module | str:
    """Return ``fused``, or an RMSNorm of the other scaling convention where only that one matches ``original``.

    The class name gives the first guess (Gemma's ``(1 + w)`` with x's dtype, LLaMA's ``w`` with promotion); a
    norm of another family that follows the other convention is found by the probe instead of left alone.
    """
    mismatch = _probe_mismatch(original, fused)
    if mismatch is None:
        return fused
    if isinstance(fused, FusedRMSNorm):
        other = FusedRMSNorm.from_module(original)
        other.offset = 1.0 - fused.offset
        other.promote_output = fused.offset == 1.0 and type(original).__name__ != "RMSNorm"
        if _probe_mismatch(original, other) is None:
            return other
    return mismatch


class _Reference(nn.Module):
    """Runs a fused module's torch reference path, so functional_call can hand it other parameters."""

    def __init__(self, fused: nn.Module) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused.reference_forward(x)


def _probe_mismatch(original: nn.Module, fused: nn.Module) -> str | None:
    """Return a sentence if `fused` computes something else than `original` on a random input, else None.

    Both run with the same randomly perturbed parameters (never the model's own, which stay untouched): at a
    weight of ones, say, ``2 * w`` and ``1 + w`` agree, and a probe at that weight could not tell them apart.
    """
    from torch.func import functional_call

    weight = fused.weight
    if weight.device.type == "meta":
        return None
    dtype = weight.dtype if weight.dtype in _PROBE_TOL else torch.float32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, weight.shape[0], generator=g).to(device=weight.device, dtype=dtype)
    params = {
        name: (p.detach().float() + 0.5 * torch.randn(p.shape, generator=g).to(p.device)).to(p.dtype)
        for name, p in original.named_parameters(recurse=False)
    }
    with torch.no_grad():
        expected = functional_call(original, params, (x,)).float()
        # Torch reference path: the probe checks the conversion, not the kernel.
        reference = _Reference(fused)
        actual = functional_call(reference, {f"fused.{k}": v for k, v in params.items()}, (x,)).float()
    err = (expected - actual).abs().max().item()
    if not err <= _PROBE_TOL[dtype] * max(1.0, expected.abs().max().item()):
        return (
            f"its output differs from {type(fused).__name__}'s by {err:.3g} on a random input, "
            "so it computes something else (custom scaling?)"
        )
    return None


@dataclass
class NormPatch:
    """What `patch_norms` did to one model: `patched` names, `skipped` (name, reason) pairs; undo with restore()."""

    model: nn.Module
    patched: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _swaps: list[tuple[nn.Module, str, nn.Module, nn.Module]] = field(default_factory=list, repr=False)
    _kinds: Counter = field(default_factory=Counter, repr=False)

    def restore(self) -> None:
        """Put every original norm module object back where its fused replacement still sits."""
        for parent, child_name, original, fused in reversed(self._swaps):
            if parent._modules.get(child_name) is fused:
                setattr(parent, child_name, original)
        self._swaps.clear()

    def summary(self) -> str:
        """Return one line per fact: how many norms were fused, of which kinds, and what was left alone why."""
        kinds = ", ".join(f"{n} x{c}" for n, c in sorted(self._kinds.items()))
        lines = [f"patched {len(self.patched)} norm(s)" + (f" ({kinds})" if kinds else "")]
        lines += [f"left alone {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)

    def __enter__(self) -> NormPatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def patch_norms(model: nn.Module, *, verify: bool = True) -> NormPatch:
    """Return a NormPatch after swapping every supported norm inside `model` for a fused module.

    Only this instance changes (its submodule slots); classes are never patched. With `verify`, each
    candidate is first compared with its replacement on a tiny random input (torch path, no kernel).
    """
    handle = NormPatch(model)
    if isinstance(model, nn.LayerNorm) or type(model).__name__.endswith("RMSNorm"):
        handle.skipped.append(
            ("", "the model itself is a norm; wrap it in FusedLayerNorm/FusedRMSNorm instead")
        )
        return handle
    fused_by_id: dict[int, nn.Module | str] = {}
    for parent_name, parent in list(model.named_modules()):
        # _modules, not named_children(): a norm shared by two slots must be swapped in both.
        for child_name, child in list(parent._modules.items()):
            if child is None:
                continue
            qualified = f"{parent_name}.{child_name}" if parent_name else child_name
            kind = type(child).__name__
            if "Norm" not in kind:
                continue
            if id(child) not in fused_by_id:
                fused = _fused_for(child)
                if verify and not isinstance(fused, str):
                    fused = _discover_convention(child, fused)
                fused_by_id[id(child)] = fused
            fused = fused_by_id[id(child)]
            if isinstance(fused, str):
                handle.skipped.append((qualified, f"{kind}: {fused}"))
                continue
            setattr(parent, child_name, fused)
            handle._swaps.append((parent, child_name, child, fused))
            handle.patched.append(qualified)
            handle._kinds[f"{kind} -> {type(fused).__name__}"] += 1
    return handle
