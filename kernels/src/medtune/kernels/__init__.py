"""medtune.kernels: fused Triton LayerNorm/RMSNorm whose backward computes only the gradients LN-tuning needs."""

from medtune.kernels._runtime import Launch, backend_for, interpreting, trace_launches
from medtune.kernels.modules import FusedLayerNorm, FusedRMSNorm
from medtune.kernels.ops.layer_norm import layer_norm, layer_norm_reference, layer_norm_residual
from medtune.kernels.ops.rms_norm import rms_norm, rms_norm_reference, rms_norm_residual
from medtune.kernels.patch import NormPatch, patch_norms

__all__ = [
    "FusedLayerNorm",
    "FusedRMSNorm",
    "Launch",
    "NormPatch",
    "backend_for",
    "interpreting",
    "layer_norm",
    "layer_norm_reference",
    "layer_norm_residual",
    "patch_norms",
    "rms_norm",
    "rms_norm_reference",
    "rms_norm_residual",
    "trace_launches",
]
