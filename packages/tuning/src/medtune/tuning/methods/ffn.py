"""FFN-tuning: train the MLP (feed-forward) linears of the transformer layers inside the PEFT groups.

The MLP linears are those of modules named ``*MLP`` (LLaMA/Mistral gate/up/down, CLIP and BLIP-ViT fc1/fc2)
and, in BERT-style layers, ``intermediate.dense`` and the layer's ``output.dense`` (not its LayerNorm: Table 1's
FFN counts exclude it). The llava connector is itself an MLP, so a PEFT connector tunes its linears; the lm_head
group has no MLP and tunes nothing under this method.
"""

from __future__ import annotations

from torch import nn

from medtune.core_models import group_of
from medtune.tuning.methods.base import Method, MethodOptions, Selection, register_method
from medtune.tuning.methods.blocks import block_parameter_names
from medtune.tuning.methods.peft_layout import MODULE_COPIES


def is_ffn_block(module: nn.Module) -> bool:
    """True for MLP modules and BERT-style Intermediate/Output modules (not an attention block's SelfOutput)."""
    name = type(module).__name__
    return name.endswith(
        ("MLP", "Intermediate", "MultiModalProjector", "LinearProjector", "PatchMerger", "VisionMlp")
    ) or (name.endswith("Output") and not name.endswith("SelfOutput"))


def select_ffn(model: nn.Module, family: str, groups: tuple[str, ...], options: MethodOptions) -> Selection:
    """Return the names of the linear weights and biases of the FFN blocks inside ``groups``."""
    in_blocks = block_parameter_names(model, family, groups, is_ffn_block)
    linear_params = {
        f"{name}.{p}"
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and group_of(name, family) in groups
        for p, _ in module.named_parameters(recurse=False)
    }
    return Selection(model, in_blocks & linear_params)


FFN = register_method(
    Method(
        name="ffn",
        display="FFN",
        kind="intrinsic",
        select=select_ffn,
        description="the MLP linears of every transformer layer (and the llava connector)",
        peft=MODULE_COPIES,
    )
)
