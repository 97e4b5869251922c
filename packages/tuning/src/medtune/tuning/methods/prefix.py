"""Prefix tuning with PEFT's PrefixEncoder: learned key/value prefixes in every self-attention layer of a text stack.

PeftModel's prefix-tuning wrapper feeds the prefix as ``past_key_values`` to the top-level forward of a causal LM.
BlipForQuestionAnswering calls its two text stacks internally (one of them a bidirectional encoder), so that wrapper
cannot reach them; to keep one mechanism for both families, the real PEFT ``PrefixEncoder`` (prefix embedding
re-parameterised through an MLP as wide as the model) is attached to each tuned text stack, and a forward pre-hook
on that stack hands its output to the stack as a pre-filled key/value cache, extending the attention mask over the
prefix: exactly what PeftModel does for a plain LM. For llava that is PeftModel's own computation (the LLM takes the
cache LlavaForConditionalGeneration passes down), so a llava prefix adapter is written in PEFT's prefix-tuning
layout; a MISS one cannot be (see ``peft_config``). Vision groups are refused: prefix tuning is not viable for ViTs
(the paper, section 2).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from peft import PrefixEncoder, PrefixTuningConfig
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from medtune.core_models.presets import TEXT_STACKS
from medtune.tuning.errors import UsageError
from medtune.tuning.methods.base import Method, MethodConfig, MethodOptions, Selection, register_method
from medtune.tuning.methods.peft_layout import NotRepresentable, PeftLayout, strip_root

DEFAULT_TOKENS = {"llava": 5, "miss": 10, "vlm": 5}
VISION_GROUPS = ("vision_tower", "vit")
ENCODER = "prefix_encoder"  # the attribute each tuned stack holds its PrefixEncoder under
PROMPT_KEY = "prompt_embeddings"  # PEFT's one tensor of a prefix adapter


@dataclass(frozen=True)
class PrefixConfig(MethodConfig):
    """Prefix tuning as trained: virtual tokens per layer and whether they were re-parameterised by an MLP."""

    virtual_tokens: int
    projection: bool = True

    def options(self) -> MethodOptions:
        return MethodOptions(prefix_tokens=self.virtual_tokens, prefix_projection=self.projection)

    @classmethod
    def from_details(cls, details: dict, family: str) -> PrefixConfig:
        """Read an older manifest, which kept only the number of virtual tokens."""
        return cls(details.get("virtual_tokens") or DEFAULT_TOKENS[family])


def text_stacks(model: nn.Module, family: str, groups: tuple[str, ...]) -> dict[str, tuple[nn.Module, bool]]:
    """Return {group: (text transformer stack, is_bidirectional)} for the tuned groups that hold one."""
    if family == "vlm":  # where the LLM sits depends on the architecture (its rule says)
        from medtune.core_models.vlm import rule_of

        rule = rule_of(model)
        if rule.prefix_refusal and "llm" in groups:
            raise UsageError(
                f"prefix tuning is not available for {rule.architecture}: {rule.prefix_refusal}; choose another "
                "method (ln, lora, attention, ffn, full)"
            )
        stacks = {"llm": (rule.text_stack, False)}
    else:
        stacks = TEXT_STACKS[family]
    return {
        g: (model.get_submodule(name), bidirectional)
        for g, (name, bidirectional) in stacks.items()
        if g in groups
    }


def stack_prefix_config(stack: nn.Module, tokens: int, projection: bool) -> PrefixTuningConfig:
    """Return the PEFT prefix config of one text stack: keys/values as wide as its (grouped) attention heads."""
    config = stack.config
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=tokens,
        token_dim=kv_heads * head_dim,
        num_layers=config.num_hidden_layers,
        num_attention_heads=kv_heads,
        encoder_hidden_size=config.hidden_size,  # the re-parameterising MLP is as wide as the model
        prefix_projection=projection,
        num_transformer_submodules=1,
    )


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
        device = next(stack.parameters()).device
        with torch.device(device):
            encoder = PrefixEncoder(stack_prefix_config(stack, tokens, options.prefix_projection))
        setattr(stack, ENCODER, encoder)
        # transformers renamed the stacks' `past_key_values` argument to `cache` during 5.x; use this one's.
        cache_arg = "cache" if "cache" in inspect.signature(stack.forward).parameters else "past_key_values"
        hook = PrefixHook(encoder, config, bidirectional, family == "miss", cache_arg)
        stack.register_forward_pre_hook(hook, with_kwargs=True)
    tuned = frozenset(n for n, _ in model.named_parameters() if f".{ENCODER}." in n)
    return Selection(model, tuned, PrefixConfig(tokens, options.prefix_projection))


def peft_config(
    model: nn.Module, family: str, tuned: frozenset[str], config: PrefixConfig, modules_to_save: list[str]
) -> PrefixTuningConfig:
    """Return PEFT's prefix-tuning config for a llava adapter; a MISS adapter has no PEFT equivalent."""
    if family == "miss":
        raise NotRepresentable(
            "PEFT's prefix tuning passes the prefix to the model's top-level forward as past_key_values, and "
            "BlipForQuestionAnswering takes none: it calls its two text stacks (one a bidirectional encoder) "
            "itself, so the prefixes medtune gives each stack cannot be expressed in PEFT's prefix layout"
        )
    if family != "llava":
        raise NotRepresentable(
            f"PEFT's prefix-tuning wrapper is checked against medtune's prefix for llava only, not yet for the "
            f"{family} family's architectures"
        )
    stack = model.get_submodule(TEXT_STACKS[family]["llm"][0])
    # PEFT saves the MLP's output, the keys/values themselves; loaded for inference they need no MLP.
    peft = stack_prefix_config(stack, config.virtual_tokens, projection=False)
    peft.modules_to_save = modules_to_save or None
    return peft


def to_peft(
    model: nn.Module, family: str, state: dict[str, torch.Tensor], config: PrefixConfig
) -> dict[str, torch.Tensor]:
    """Return PEFT's one prefix tensor: every layer's keys/values, (virtual tokens, layers * 2 * kv width), fp32."""
    name = TEXT_STACKS[family]["llm"][0]
    stack = model.get_submodule(name)
    # Built on the CPU from the gathered tensors, so this works the same for a sharded (FSDP) model.
    encoder = PrefixEncoder(stack_prefix_config(stack, config.virtual_tokens, config.projection))
    mine = f"{name}.{ENCODER}."
    encoder.load_state_dict({k[len(mine) :]: t.float() for k, t in state.items() if k.startswith(mine)})
    with torch.no_grad():
        table = encoder(torch.arange(config.virtual_tokens)).contiguous()
    return {PROMPT_KEY: table}


def from_peft(family: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the prefix table as the no-MLP encoder's embedding, and modules_to_save tensors by their names."""
    embedding = f"{TEXT_STACKS[family]['llm'][0]}.{ENCODER}.embedding.weight"
    return {embedding if key == PROMPT_KEY else strip_root(key): t for key, t in state.items()}


def load_options(config: PrefixConfig) -> MethodOptions:
    """A PEFT-layout prefix holds the keys/values themselves, so the rebuilt encoder is a plain table."""
    return MethodOptions(prefix_tokens=config.virtual_tokens, prefix_projection=False)


def refuse_merge(model: nn.Module) -> int:
    """Prefix tuning has nothing to merge: raise a usage error saying what to ship instead."""
    raise UsageError(
        "a prefix-tuning adapter's virtual tokens are extra inputs, not weights, so it cannot be merged into "
        "the base; ship the adapter folder (PeftModel.from_pretrained loads a llava one) or use `medtune predict`"
    )


PREFIX = register_method(
    Method(
        name="prefix",
        display="Prefix",
        kind="adapter",
        select=select_prefix,
        description="PEFT prefix tuning: learned key/value prefixes, re-parameterised through an MLP",
        config_type=PrefixConfig,
        merge=refuse_merge,
        peft=PeftLayout(peft_config, to_peft, from_peft, load_options),
    )
)
