"""Batched answer generation for LLaVA-style and MISS (BLIP-VQA) models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch

# Keys a batch may carry that generate() understands; others (labels, qids, answers, ...) stay behind.
_MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_sizes")
# The vlm family's processors add their own: Qwen-VL's image grid, Idefics3's tile mask, Gemma 3's token types.
_VLM_INPUTS = (
    *_MODEL_INPUTS,
    "image_grid_thw",
    "pixel_attention_mask",
    "token_type_ids",
    "mm_token_type_ids",
)

# The paper's inference settings for LLaVA-Med (sampling, one beam, temperature 0.2).
PAPER_GENERATION = {"temperature": 0.2, "num_beams": 1}


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _generation_kwargs(
    max_new_tokens: int, temperature: float, num_beams: int, tokenizer: Any, family: str
) -> dict:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy decoding), got {temperature}.")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}.")
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "num_beams": num_beams}
    if temperature == 0:
        kwargs["do_sample"] = False
    else:
        kwargs.update(do_sample=True, temperature=temperature, top_p=None, top_k=None)
    if family == "miss":
        return kwargs  # BlipForQuestionAnswering.generate sets the decoder's pad/bos/eos ids itself
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    if pad is not None:
        kwargs["pad_token_id"] = pad
    return kwargs


def _check_batch(batch: dict, index: int) -> None:
    for key in ("input_ids", "pixel_values"):
        if key not in batch:
            raise KeyError(
                f"Batch {index} has no {key!r}; generation needs input_ids, attention_mask and "
                "pixel_values (use the medtune.data evaluation collator)."
            )


def _strip_prompt(output: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Return the generated columns of `output` [B, T + N] after the prompt `input_ids` [B, T]."""
    prompt_len = input_ids.shape[1]
    # Left padding lines every prompt up to the same last column, so one cut suffices; a model whose
    # generate() already returns only new tokens is left as it is.
    if output.shape[1] >= prompt_len and torch.equal(output[:, :prompt_len], input_ids):
        return output[:, prompt_len:]
    return output


def _check_left_padded(batch: dict, index: int) -> None:
    mask = batch.get("attention_mask")
    if mask is not None and mask.dim() == 2 and not bool(mask[:, -1].all()):
        raise ValueError(
            f"Batch {index} is right-padded (attention_mask has zeros in its last column); llava "
            "generation needs left-padded prompts, so set tokenizer.padding_side = 'left' in the collator."
        )


def generate_answers(
    model: torch.nn.Module,
    batches: Iterable[dict],
    tokenizer: Any,
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    num_beams: int = 1,
    seed: int = 0,
    progress: bool = True,
    family: Literal["llava", "miss", "vlm"] = "llava",
) -> list[str]:
    """Return one decoded answer per example (special tokens skipped, stripped), in batch order.

    llava batches hold left-padded prompts (`input_ids`/`attention_mask` [B, T], `pixel_values`
    [B, C, H, W]); the prompt columns are cut from the output. miss batches are fed to
    BlipForQuestionAnswering.generate, whose output is the decoder's answer only.
    """
    if family not in ("llava", "miss", "vlm"):
        raise ValueError(f"Unknown family {family!r}; expected 'llava', 'miss' or 'vlm'.")
    decoder_only = family in ("llava", "vlm")  # the answer follows the prompt in the same sequence
    from tqdm.auto import tqdm

    kwargs = _generation_kwargs(max_new_tokens, temperature, num_beams, tokenizer, family)
    device = _model_device(model)
    dtype = next(model.parameters()).dtype
    total = len(batches) if hasattr(batches, "__len__") else None
    answers: list[str] = []
    was_training = model.training
    model.eval()
    # One seeded generator state for the whole pass: sampling (temperature > 0) is reproducible too.
    torch.manual_seed(seed)
    try:
        with torch.inference_mode():
            for index, batch in enumerate(tqdm(batches, total=total, desc="generate", disable=not progress)):
                _check_batch(batch, index)
                if decoder_only:
                    _check_left_padded(batch, index)
                keys = _VLM_INPUTS if family == "vlm" else _MODEL_INPUTS
                inputs = {k: batch[k].to(device) for k in keys if batch.get(k) is not None}
                if inputs["pixel_values"].is_floating_point():
                    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
                output = model.generate(**inputs, **kwargs)
                if decoder_only:
                    output = _strip_prompt(output, inputs["input_ids"])
                texts = tokenizer.batch_decode(output, skip_special_tokens=True)
                answers.extend(text.strip() for text in texts)
    finally:
        model.train(was_training)
    return answers
