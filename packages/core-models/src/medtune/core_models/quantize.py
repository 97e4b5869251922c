"""4-bit frozen weights: swap frozen nn.Linear layers for bitsandbytes NF4 (double quantisation), in place."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# The output head stays in 16/32 bit, as bitsandbytes setups do: its errors land directly on the logits.
NEVER_QUANTIZE = ("lm_head",)


class QuantizationUnavailable(ImportError):
    """4-bit weights were requested but bitsandbytes cannot be imported."""


@dataclass
class QuantizeReport:
    """Which linear layers became NF4 and which stayed full precision (and why)."""

    quantized: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # module name -> reason
    compute_dtype: torch.dtype = torch.float32


def require_bitsandbytes():
    """Return the bitsandbytes module, or raise QuantizationUnavailable with what to install."""
    try:
        import bitsandbytes
    except ImportError as err:
        raise QuantizationUnavailable(
            f"--4bit needs bitsandbytes, which cannot be imported ({err}); install it with "
            "`pip install 'medtune-core-models[4bit]'` or drop --4bit"
        ) from None
    return bitsandbytes


def quantize_frozen(model: nn.Module, keep: set[str] | frozenset[str]) -> QuantizeReport:
    """Replace every frozen nn.Linear (no parameter named in ``keep``) by an NF4 Linear4bit; return what was done."""
    bnb = require_bitsandbytes()
    device = next(model.parameters()).device
    if device.type == "meta":
        raise ValueError("cannot quantize a model on the meta device; load or build its weights first")
    # bf16 matmuls on a GPU; the CPU backend computes in fp32 (bf16 there is slow and no more exact).
    compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    report = QuantizeReport(compute_dtype=compute_dtype)
    targets = []
    for name, module in model.named_modules():
        if type(module) is not nn.Linear:
            continue
        own = {f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)}
        if name.split(".")[-1] in NEVER_QUANTIZE or name in NEVER_QUANTIZE:
            report.kept[name] = "output head"
        elif own & set(keep):
            report.kept[name] = "trainable"
        else:
            targets.append((name, module))
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        q = bnb.nn.Linear4bit(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            compute_dtype=compute_dtype,
            compress_statistics=True,  # double quantisation of the block scales
            quant_type="nf4",
            device="cpu",
        )
        # On a GPU the weight is quantised where it lies, in its own dtype (no round trip through host
        # memory: that would move ~26 GB for a 7B model); on the CPU it is quantised from fp32.
        weight = module.weight.data if device.type == "cuda" else module.weight.data.to("cpu", torch.float32)
        q.weight = bnb.nn.Params4bit(
            weight,
            requires_grad=False,
            compress_statistics=True,
            quant_type="nf4",
        )
        if module.bias is not None:
            q.bias = nn.Parameter(module.bias.data.to(compute_dtype), requires_grad=False)
        setattr(parent, child, q.to(device))  # moving the layer is what quantises its weight
        report.quantized.append(name)
    return report
