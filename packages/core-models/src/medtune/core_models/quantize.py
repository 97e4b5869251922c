"""4-bit frozen weights: bitsandbytes NF4 with double quantisation, applied while loading (or, in place, after)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# The output head stays in 16/32 bit, as bitsandbytes setups do: its errors land directly on the logits.
NEVER_QUANTIZE = ("lm_head",)


class QuantizationUnavailable(ImportError):
    """4-bit weights were requested but bitsandbytes cannot be imported."""


@dataclass(frozen=True)
class FourBit:
    """A request to load frozen linear layers as NF4; the linears named in ``keep`` stay in the load dtype.

    ``keep`` holds module names (``model.language_model.layers.0.self_attn.q_proj``): the linears that train,
    worked out before loading, since a weight quantised while it loads can no longer be trained.
    """

    keep: frozenset[str] = frozenset()

    def skipped(self) -> list[str]:
        """Return the module names bitsandbytes must leave alone: the trainable linears and the output head."""
        return sorted(set(self.keep) | set(NEVER_QUANTIZE))


def bnb_config(request: FourBit, compute_dtype: torch.dtype):
    """Return transformers' BitsAndBytesConfig for ``request``: NF4, double-quantised, computing in ``compute_dtype``."""
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=request.skipped(),
    )


def keep_cpu_layout(model: nn.Module) -> int:
    """Keep every NF4 layer's weights in bitsandbytes' training layout on the CPU; return how many layers.

    On a CPU with AVX512-BF16, bitsandbytes repacks an NF4 weight the first time an eval-mode layer runs without
    gradients (``Linear4bit.support_avx512bf16_for_cpu``), into a bf16-scaled inference layout. That repacking
    assumes every weight row is a whole number of 64-value quantisation blocks, so it fails on layers such as
    the demo's 96-wide ones; it also rounds the block scales to bf16 (outputs move by ~0.1), and a layer left
    in that layout passes no gradient to its input (bitsandbytes 0.50's gemv_4bit has no autograd kernel), so
    tuning after a "before" score would silently lose its gradients. medtune scores the
    very weights it trains, so it turns that repacking off per layer (the attribute bitsandbytes reads).
    """
    bnb = require_bitsandbytes()
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def quantized_names(model: nn.Module) -> list[str]:
    """Return the names of ``model``'s NF4 linear layers."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    return [name for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]


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
        q = nf4_linear(bnb, module, compute_dtype, "cpu")
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
    keep_cpu_layout(model)
    return report


def nf4_linear(bnb, linear: nn.Linear, compute_dtype: torch.dtype, device: str) -> nn.Module:
    """Return an empty NF4 layer (double-quantised block scales) of ``linear``'s shape on ``device``."""
    return bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=compute_dtype,
        compress_statistics=True,  # double quantisation of the block scales
        quant_type="nf4",
        device=device,
    )


def nf4_layers(model: nn.Module, request: FourBit, compute_dtype: torch.dtype) -> list[str]:
    """Swap every nn.Linear of a weightless (meta) model not skipped by ``request`` for an empty NF4 layer.

    The weights arrive later, one at a time, through place_nf4_weight; returns the swapped layers' names.
    """
    bnb = require_bitsandbytes()
    skipped = set(request.skipped())
    swapped = []
    for name, module in list(model.named_modules()):
        if type(module) is not nn.Linear or name in skipped or name.rpartition(".")[2] in skipped:
            continue
        layer = nf4_linear(bnb, module, compute_dtype, "meta")
        layer.requires_grad_(False)
        model.set_submodule(name, layer)
        swapped.append(name)
    return swapped


def place_nf4_weight(module: nn.Module, weight: torch.Tensor, device: torch.device) -> bool:
    """Quantise ``weight`` (out x in, full precision) into ``module`` on ``device`` if it is an NF4 layer.

    Returns False (and does nothing) for any other module. The full-precision tensor is dropped once quantised.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    if not isinstance(module, bnb.nn.Linear4bit):
        return False
    params = bnb.nn.Params4bit(
        weight, requires_grad=False, compress_statistics=True, quant_type="nf4", module=module
    )
    module.weight = params.to(device)  # moving a Params4bit is what quantises it
    return True
