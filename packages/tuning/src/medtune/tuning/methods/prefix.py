"""Prefix tuning with PEFT's PrefixEncoder: learned key/value prefixes in every self-attention layer of a text stack.

PeftModel's prefix-tuning wrapper assumes a causal/seq2seq LM taking ``past_key_values`` at the top level; neither
LlavaForConditionalGeneration (the LLM sits under a vision wrapper) nor BlipForQuestionAnswering (two text stacks
called internally) fits it. So the real PEFT ``PrefixEncoder`` (prefix embedding re-parameterised through an MLP as
wide as the model) is attached to each tuned text stack, and a forward pre-hook on that stack hands its output to the
stack as a pre-filled key/value cache, extending the attention mask over the prefix: exactly what PeftModel does for
a plain LM. Vision groups are refused: prefix tuning is not viable for ViTs (the paper, section 2).
"""

from __future__ import annotations

import inspect

import torch
from peft import PrefixEncoder, PrefixTuningConfig
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from medtune.tuning.methods.base import Method, MethodOptions, Selection, register_method
from medtune.tuning.errors import UsageError

DEFAULT_TOKENS = {"llava": 5, "miss": 10, "vlm": 5}
VISION_GROUPS = ("vision_tower", "vit")


def text_stacks(model: nn.Module, family: str, groups: tuple[str, ...]) -> dict[str, tuple[nn.Module, bool]]:
    """Return {group: (text transformer stack, is_bidirectional)} for the tuned groups that hold one."""
    if family == "llava":
        return {"llm": (model.model.language_model, False)} if "llm" in groups else {}
    if family == "vlm":  # where the LLM sits depends on the architecture (its rule says)
        from medtune.core_models.vlm import rule_of

        rule = rule_of(model)
        if rule.prefix_refusal and "llm" in groups:
            raise UsageError(
                f"prefix tuning is not available for {rule.architecture}: {rule.prefix_refusal}; choose another "
                "method (ln, lora, attention, ffn, full)"
            )
        return {"llm": (model.get_submodule(rule.text_stack), False)} if "llm" in groups else {}
    stacks = {"jtm": (model.text_encoder, True), "dec": (model.text_decoder.bert, False)}
    return {g: s for g, s in stacks.items() if g in groups}


class PrefixHook:
    """Feeds a PrefixEncoder's keys/values to a text stack as a pre-filled cache on every forward."""

    def __init__(
        self, encoder: PrefixEncoder, config, bidirectional: bool, encoder_decoder_cache: bool, cache_arg: str
    ):
        self.encoder = encoder
        self.cache_arg = (
            cache_arg  # the stack's keyword for its cache: `cache` (transformers >= 5.2x) or older
        )
        self.tokens = encoder.embedding.num_embeddings
        self.layers = config.num_hidden_layers
        self.kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.bidirectional = bidirectional
        self.encoder_decoder_cache = encoder_decoder_cache

    def fill(self, cache: DynamicCache, batch: int, dtype: torch.dtype, device: torch.device) -> None:
        """Write the prefix keys/values, each of shape (batch, kv_heads, tokens, head_dim), into ``cache``."""
        index = torch.arange(self.tokens, device=device).expand(batch, -1)
        flat = self.encoder(index).to(dtype)  # (batch, tokens, layers * 2 * kv_heads * head_dim)
        kv = flat.view(batch, self.tokens, self.layers * 2, self.kv_heads, self.head_dim).permute(
            2, 0, 3, 1, 4
        )
        for layer in range(self.layers):
            cache.update(kv[2 * layer], kv[2 * layer + 1], layer)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        # Explicit None checks: an empty cache (what generate() passes first) has length 0 and is falsy.
        cache = kwargs.pop("past_key_values", None)
        if cache is None:
            cache = kwargs.pop("cache", None)
        positions = kwargs.get("position_ids")
        if positions is not None:
            # Callers such as generate() count positions over their own tokens; without a cache (training) the
            # stack numbers tokens after the prefix (from the cache length), so shift to that same numbering.
            kwargs["position_ids"] = positions + self.tokens
        if cache is not None and cache.get_seq_length() > 0:
            # A later generation step: the prefix is already cached, but the caller's mask does not cover it.
            mask = kwargs.get("attention_mask")
            if mask is not None and mask.dim() == 2:
                kwargs["attention_mask"] = torch.cat([mask.new_ones(mask.shape[0], self.tokens), mask], dim=1)
            kwargs[self.cache_arg] = cache
            return args, kwargs
        source = kwargs.get("inputs_embeds")
        if source is None:
            source = kwargs.get("input_ids", args[0] if args else None)
        batch, length = source.shape[:2]
        dtype = module.get_input_embeddings().weight.dtype
        if cache is None:
            cache = DynamicCache(config=module.config)
            if self.encoder_decoder_cache:
                cache = EncoderDecoderCache(cache, DynamicCache(config=module.config))
        self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        self.fill(
            self_cache, batch, dtype, source.device
        )  # an empty cache from generate() is filled in place
        kwargs[self.cache_arg] = cache
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.long, device=source.device)
        mask = torch.cat([mask.new_ones(batch, self.tokens), mask], dim=1)
        if self.bidirectional:
            # BERT-style encoders build their mask from the query length alone; hand them the (batch, 1, q, kv)
            # additive mask over prefix + tokens instead, which they use as given.
            mask = (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
            mask = mask.expand(batch, 1, length, self.tokens + length)
        kwargs["attention_mask"] = mask
        return args, kwargs


def select_prefix(
    model: nn.Module, family: str, groups: tuple[str, ...], options: MethodOptions
) -> Selection:
    """Attach a PEFT PrefixEncoder to each tuned text stack and return the names of its parameters."""
    vision = [g for g in groups if g in VISION_GROUPS]
    if vision:
        raise UsageError(
            f"prefix tuning cannot tune the vision group {vision[0]!r}: prefix tuning is not viable for ViTs "
            "(the paper, section 2); set that group to T or F, or choose another method such as ln"
        )
    tokens = options.prefix_tokens or DEFAULT_TOKENS[family]
    for stack, bidirectional in text_stacks(model, family, groups).values():
        config = stack.config
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        peft_config = PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=tokens,
            token_dim=kv_heads * head_dim,
            num_layers=config.num_hidden_layers,
            num_attention_heads=kv_heads,
            encoder_hidden_size=config.hidden_size,  # the re-parameterising MLP is as wide as the model
            prefix_projection=options.prefix_projection,
            num_transformer_submodules=1,
        )
        device = next(stack.parameters()).device
        with torch.device(device):
            encoder = PrefixEncoder(peft_config)
        stack.prefix_encoder = encoder
        # transformers renamed the stacks' `past_key_values` argument to `cache` during 5.x; use this one's.
        cache_arg = "cache" if "cache" in inspect.signature(stack.forward).parameters else "past_key_values"
        hook = PrefixHook(encoder, config, bidirectional, family == "miss", cache_arg)
        stack.register_forward_pre_hook(hook, with_kwargs=True)
    tuned = frozenset(n for n, _ in model.named_parameters() if ".prefix_encoder." in n)
    return Selection(model, tuned, {"virtual_tokens": tokens})


PREFIX = register_method(
    Method(
        name="prefix",
        display="Prefix",
        kind="adapter",
        select=select_prefix,
        description="PEFT prefix tuning: learned key/value prefixes, re-parameterised through an MLP",
    )
)
