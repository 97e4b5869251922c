"""Memory planner: peak training memory (weights, gradients, optimizer state, activations) of a tuned model.

Built for the meta device (no weights needed). Conventions: trainable tensors are fp32 with fp32 gradients and
AdamW's two fp32 moments; frozen linear weights are NF4 with double quantisation under ``four_bit`` (except the
output head, which bitsandbytes setups keep in 16 bit); other frozen tensors are in ``dtype_bytes`` (2 = bf16 on a
GPU). Activations count what autograd keeps for the backward pass through every transformer stack the gradient
crosses (from the loss down to the earliest trainable tensor), per layer and token, plus the fp32 logits and their
gradient; gradient checkpointing keeps one input per layer and recomputes one layer at a time.

The load phase peaks at the weights in their final form plus the one tensor in flight: medtune loads tensor by
tensor (quantising each frozen linear as it arrives under ``four_bit``), holding the tensor as read and its
converted copy at once, so the largest single tensor counts twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from medtune.core_models import FAMILY_GROUPS, group_of

GIB = 1024**3
CONSUMER_GPUS = {"8 GB": 8 * GIB, "12 GB": 12 * GIB, "16 GB": 16 * GIB, "24 GB": 24 * GIB}
CUDA_CONTEXT = 0.5 * GIB  # CUDA context + allocator slack a card loses before the first tensor
TEXT_TOKENS = 128  # prompt template + question + answer of a planned sequence, beside its image tokens
NF4_BYTES_PER_PARAM = (
    0.5 + 1 / 64 + 4 / (64 * 256)
)  # 4-bit codes + 8-bit block absmax (64) + fp32 per 256 blocks


@dataclass(frozen=True)
class Stack:
    """One transformer stack of a model, as the activation estimate sees it."""

    group: str
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int
    heads: int
    tokens: int  # sequence length through this stack
    cross_tokens: int = 0  # keys/values of cross-attention (BLIP text stacks attend to the image)
    eager: bool = False  # attention probabilities are materialised (BLIP) rather than fused (SDPA)


@dataclass(frozen=True)
class MemoryPlan:
    """Peak training memory in bytes, by consumer, and the consumer GPUs it fits."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    total: int  # the training step's peak
    load_peak: int  # the load phase's peak
    fits: tuple[str, ...]
    batch: int
    seq_len: int
    four_bit: bool
    grad_checkpointing: bool

    @property
    def peak(self) -> int:
        """Return the whole run's planned peak: the larger of the load and the training step."""
        return max(self.total, self.load_peak)

    def as_dict(self) -> dict:
        """Return the plan as a JSON-ready dict."""
        return {**asdict(self), "peak": self.peak, "fits": list(self.fits)}


def default_seq_len(model: nn.Module, family: str) -> int:
    """Return a real training sequence: image tokens + prompt template + question + answer (llava), or question."""
    if family == "llava":
        vision = model.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2 + TEXT_TOKENS
    if family == "vlm":  # the architecture's image tokens at the planning resolution (core_models.vlm)
        from medtune.core_models.vlm import rule_of

        return rule_of(model).image_tokens(model.config) + TEXT_TOKENS
    return 35  # BLIP-VQA's question limit


def stacks(
    model: nn.Module, family: str, seq_len: int, answer_len: int = 10, fused: bool = True
) -> list[Stack]:
    """Return the model's transformer stacks in forward order with their shapes for one training sequence."""
    config = model.config
    vision = config.vision_config
    if family == "vlm":  # each architecture's tower shape comes from its rule (Qwen-VL's configs differ)
        from medtune.core_models.vlm import rule_of

        t = rule_of(model).vision(config)
        vit = Stack(
            "vision_tower", t.layers, t.hidden, t.intermediate, t.kv_dim, t.heads, t.tokens, eager=not fused
        )
    else:
        patches = (vision.image_size // vision.patch_size) ** 2 + 1
        vit = Stack(
            FAMILY_GROUPS[family][0],
            vision.num_hidden_layers,
            vision.hidden_size,
            vision.intermediate_size,
            vision.hidden_size,
            vision.num_attention_heads,
            patches,
            eager=family == "miss" or not fused,
        )
    text = config.text_config
    if family in ("llava", "vlm"):
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        kv = (text.num_key_value_heads or text.num_attention_heads) * head_dim
        llm = Stack("llm", text.num_hidden_layers, text.hidden_size, text.intermediate_size, kv,
                    text.num_attention_heads, seq_len, eager=not fused)  # fmt: skip
        return [vit, llm]
    bert = dict(layers=text.num_hidden_layers, hidden=text.hidden_size, intermediate=text.intermediate_size,
                kv_dim=text.hidden_size, heads=text.num_attention_heads, eager=True)  # fmt: skip
    return [vit, Stack("jtm", tokens=seq_len, cross_tokens=patches, **bert),
            Stack("dec", tokens=answer_len, cross_tokens=seq_len, **bert)]  # fmt: skip


def layer_elements(stack: Stack, linears_train: bool) -> int:
    """Return the activation elements one layer keeps for backward, per sequence."""
    h, f, t = stack.hidden, stack.intermediate, stack.tokens
    per_token = 6 * h + 2 * stack.kv_dim + 3 * f  # norm inputs, attention q/k/v/out, MLP intermediates
    if linears_train:
        per_token += 3 * h + f  # inputs of the linears whose weights need a gradient
    elements = per_token * t
    if stack.eager:
        elements += 2 * stack.heads * t * t  # softmax output + dropout mask
    if stack.cross_tokens:
        elements += (
            2 * stack.cross_tokens * stack.kv_dim + 2 * stack.heads * t * stack.cross_tokens + 3 * h * t
        )
    return elements


def plan_memory(
    tuned,
    *,
    batch: int = 1,
    seq_len: int | None = None,
    four_bit: bool = False,
    grad_checkpointing: bool = False,
    dtype_bytes: int = 2,
    fused_attention: bool = True,
) -> MemoryPlan:
    """Return the estimated peak training memory of ``tuned`` (a Tuned from apply_paradigm) for one step.

    ``fused_attention``: SDPA's flash/memory-efficient kernels (GPU) keep no (tokens x tokens) probabilities; the
    CPU math path does.
    """
    model, family = tuned.model, tuned.family
    seq_len = seq_len or default_seq_len(model, family)
    frozen_linear = set()
    if four_bit:
        for name, module in model.named_modules():
            if (
                isinstance(module, nn.Linear)
                and name != "lm_head"
                and f"{name}.weight" not in tuned.trainable
            ):
                frozen_linear.add(f"{name}.weight")
    weights = trainable = largest = 0
    trains_in: dict[str, bool] = dict.fromkeys(FAMILY_GROUPS[family], False)
    linear_trains: dict[str, bool] = dict.fromkeys(FAMILY_GROUPS[family], False)
    linear_weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for name, param in model.named_parameters():
        n = param.numel()
        largest = max(largest, n)
        group = group_of(name, family)
        if name in tuned.trainable:
            trainable += n
            weights += 4 * n
            trains_in[group] = True
            linear_trains[group] |= name in linear_weights or ".lora_" in name
        elif name in frozen_linear:
            weights += int(NF4_BYTES_PER_PARAM * n)
        else:
            weights += dtype_bytes * n
    activations = 0
    order = stacks(model, family, seq_len, fused=fused_attention)
    for i, stack in enumerate(order):
        # the gradient crosses this stack if it, or anything feeding it, trains (llava's input embeddings feed the LLM)
        upstream = [s.group for s in order[: i + 1]] + (
            ["connector", "lm_head"] if stack.group == "llm" else []
        )
        if not any(trains_in.get(g, False) for g in upstream):
            continue
        full_layer = layer_elements(stack, linear_trains[stack.group])
        if grad_checkpointing:
            kept = stack.layers * stack.hidden * stack.tokens + full_layer
        else:
            kept = stack.layers * full_layer
        activations += batch * kept * dtype_bytes
    text = model.config.text_config
    logit_tokens = min(seq_len, TEXT_TOKENS) if family in ("llava", "vlm") else 10
    activations += (
        batch * logit_tokens * text.vocab_size * (dtype_bytes + 12)
    )  # logits, fp32 copy, log-softmax, grad
    gradients, optimizer = 4 * trainable, 8 * trainable
    total = weights + gradients + optimizer + activations
    load_peak = weights + 2 * largest * max(dtype_bytes, 2)
    peak = max(total, load_peak)
    fits = tuple(name for name, size in CONSUMER_GPUS.items() if peak + CUDA_CONTEXT <= size)
    return MemoryPlan(weights, gradients, optimizer, activations, total, load_peak, fits, batch, seq_len,
                      four_bit, grad_checkpointing)  # fmt: skip
