"""Attention-tuning: train whole attention blocks (self- and cross-attention) inside the PEFT groups.

A block is the outermost module whose class name ends in ``Attention``: LlamaAttention/MistralAttention and
CLIPAttention/BlipAttention (query/key/value and output projections), and in BERT-style text layers
BlipTextAttention, which owns the projections, the output dense layer and the block's own output LayerNorm
(Table 1's attention counts include it). Pre-norm blocks (LLaMA, CLIP, BLIP's ViT) keep their input norms outside
the block, so they are not selected. The llava connector and lm_head groups hold no attention block: as PEFT
groups they tune nothing under this method.
"""

from __future__ import annotations

from torch import nn

from medtune.tuning.methods.base import Method, MethodOptions, Selection, register_method
from medtune.tuning.methods.blocks import block_parameter_names
from medtune.tuning.methods.peft_layout import MODULE_COPIES


def is_attention_block(module: nn.Module) -> bool:
    """True for the attention-block classes of LLaMA, Mistral, CLIP and BLIP (vision and text)."""
    return type(module).__name__.endswith("Attention")


def select_attention(
    model: nn.Module, family: str, groups: tuple[str, ...], options: MethodOptions
) -> Selection:
    """Return the names of every parameter of the attention blocks inside ``groups``."""
    return Selection(model, block_parameter_names(model, family, groups, is_attention_block))


ATTENTION = register_method(
    Method(
        name="attention",
        display="Attention",
        kind="intrinsic",
        select=select_attention,
        description="whole attention blocks (projections, output projection, BERT-style output LayerNorm)",
        peft=MODULE_COPIES,
    )
)
