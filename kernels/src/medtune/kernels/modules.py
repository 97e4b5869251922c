"""Drop-in nn.Modules over the fused norms, built from (and sharing the Parameters of) existing norms."""

from __future__ import annotations

import torch
from torch import nn

from medtune.kernels.ops.layer_norm import layer_norm, layer_norm_reference
from medtune.kernels.ops.rms_norm import rms_norm, rms_norm_reference


class FusedLayerNorm(nn.Module):
    """LayerNorm over the last dimension running the fused kernel; state-dict keys `weight`, `bias`."""

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = (hidden_size,)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.zeros(hidden_size, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_module(cls, norm: nn.LayerNorm) -> FusedLayerNorm:
        """Return a FusedLayerNorm holding the very same weight/bias Parameters as `norm`."""
        if not isinstance(norm, nn.LayerNorm):
            raise TypeError(f"FusedLayerNorm.from_module expects an nn.LayerNorm, got {type(norm).__name__}.")
        if len(norm.normalized_shape) != 1:
            raise ValueError(
                f"{type(norm).__name__} normalises over {len(norm.normalized_shape)} trailing dimensions "
                f"{tuple(norm.normalized_shape)}; FusedLayerNorm handles only the last one."
            )
        if norm.weight is None:
            raise ValueError(
                f"{type(norm).__name__} has no weight (elementwise_affine=False); nothing to tune."
            )
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        fused.normalized_shape = tuple(norm.normalized_shape)
        fused.eps = norm.eps
        # The same Parameter objects, so requires_grad, optimizer state and tied references carry over.
        fused.weight = norm.weight
        if norm.bias is not None:
            fused.bias = norm.bias
        else:
            fused.register_parameter("bias", None)
        fused.train(norm.training)
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the normalised `x` ([..., hidden]) in x's dtype."""
        return layer_norm(x, self.weight, self.bias, self.eps)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return what forward computes, through torch instead of the kernel (for checks)."""
        return layer_norm_reference(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, bias={self.bias is not None}"


class FusedRMSNorm(nn.Module):
    """RMSNorm over the last dimension running the fused kernel; state-dict key `weight`.

    `offset` is added to the weight (1.0 for Gemma's `1 + w`); `promote_output` returns the dtype
    `weight * x` would have, as LlamaRMSNorm does (an fp32 weight makes a bf16 input's output fp32).
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-6,
        offset: float = 0.0,
        promote_output: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.eps = eps
        self.offset = offset
        self.promote_output = promote_output
        init = torch.zeros if offset else torch.ones
        self.weight = nn.Parameter(init(hidden_size, device=device, dtype=dtype))

    @property
    def variance_epsilon(self) -> float:
        """Return eps under the name transformers' RMSNorm classes use."""
        return self.eps

    @classmethod
    def from_module(cls, norm: nn.Module) -> FusedRMSNorm:
        """Return a FusedRMSNorm holding `norm`'s very weight Parameter (LlamaRMSNorm, MistralRMSNorm, ...)."""
        name = type(norm).__name__
        weight = getattr(norm, "weight", None)
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
        if not name.endswith("RMSNorm"):
            raise TypeError(f"FusedRMSNorm.from_module expects an *RMSNorm module, got {name}.")
        if not isinstance(weight, nn.Parameter) or weight.dim() != 1:
            raise ValueError(f"{name} has no 1-D weight Parameter; FusedRMSNorm needs one to scale by.")
        if not isinstance(eps, float | int):
            raise ValueError(
                f"{name} has eps={eps!r}; FusedRMSNorm needs a number in `variance_epsilon` or `eps`."
            )
        # Gemma-family norms scale by (1 + w) and return x's dtype; LLaMA-style ones scale by w and
        # return weight * x.to(input dtype), whose dtype follows type promotion.
        gemma = name.startswith("Gemma")
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        fused.hidden_size = weight.shape[0]
        fused.eps = float(eps)
        fused.offset = 1.0 if gemma else 0.0
        fused.promote_output = not gemma and name != "RMSNorm"
        fused.weight = weight
        fused.train(norm.training)
        return fused

    def _out_dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.promote_types(self.weight.dtype, x.dtype) if self.promote_output else x.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the normalised `x` ([..., hidden]) scaled by (weight + offset)."""
        return rms_norm(x, self.weight, self.eps, self.offset, out_dtype=self._out_dtype(x))

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return what forward computes, through torch instead of the kernel (for checks)."""
        return rms_norm_reference(x, self.weight, self.eps, self.offset, self._out_dtype(x))

    def extra_repr(self) -> str:
        return f"({self.hidden_size},), eps={self.eps}, offset={self.offset}"
