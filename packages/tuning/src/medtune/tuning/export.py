"""Merge a run's adapter into its base and write a checkpoint that transformers loads and serves as it is.

The folder holds config.json, safetensors shards in the base's own precision with their index, the tokenizer, a
complete processor (LlavaProcessor with the patch size, feature strategy and a chat template rendering exactly
the prompt the model was tuned with; BlipProcessor for MISS, whose BLIP-VQA model takes the bare question),
generation_config.json with medtune's evaluation settings, and a model card (README.md).

The merge streams where it can (``merge_stream``): tensor by tensor from the base's safetensors, so a 7B base is
never held in memory. Where it cannot (an original LLaVA-Med release, .bin weights, a load-time conversion that
is not a rename), the base is rebuilt in memory, merged and saved with ``save_pretrained``; the export says which.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import torch

from medtune.core_models import Built, get_preset
from medtune.data import get_template
from medtune.data.collators import prompt_bos
from medtune.data.run_files import CONFIG
from medtune.data.templates import PromptTemplate
from medtune.tuning.adapter import read_manifest
from medtune.tuning.errors import AdapterError, UsageError
from medtune.tuning.merge_stream import (
    NotStreamable,
    base_fingerprint,
    plan_merge,
    write_config,
    write_merged,
)
from medtune.tuning.model_card import model_card
from medtune.tuning.rebuild import base_source, rebuild_from_manifest
from medtune.tuning.run_dir import check_free_space, replace_folder

DEFAULT_SHARD = "5GB"


def checkpoint_dtype(folder: str | Path | None, fallback: torch.dtype) -> torch.dtype:
    """Return the dtype a checkpoint's config.json says its weights are in (``fallback`` when it names none)."""
    file = Path(folder) / "config.json" if folder is not None else None
    if file is None or not file.is_file():
        return fallback
    config = json.loads(file.read_text())
    name = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    found = getattr(torch, name, None) if isinstance(name, str) else None
    return found if isinstance(found, torch.dtype) else fallback


def merged_model(adapter: Path, model_path: str | None = None) -> Built:
    """Return the adapter's base (from ``model_path`` or the manifest) with the adapter merged, in the base's dtype."""
    from medtune.tuning.methods import get_method

    manifest = read_manifest(adapter)
    method = get_method(manifest["method"])
    source = base_source(manifest, model_path)
    preset = get_preset(manifest["preset"])
    # Loaded in the checkpoint's own precision, so a 7B base is never held in fp32 just to be saved in fp16.
    dtype = checkpoint_dtype(source or preset.default_weights, torch.float32)
    built = rebuild_from_manifest(adapter, model_path, dtype=dtype)
    with torch.no_grad():
        if method.name == "lora":
            lora_factors_in_fp32(built.model, adapter, manifest)
        if method.merge is not None:
            method.merge(built.model)
    # Tuned norms trained in fp32; the checkpoint is written in the base's own precision.
    built.model.to(dtype)
    built.model.config.dtype = dtype
    for p in built.model.parameters():
        p.requires_grad_(False)
    return built


def lora_factors_in_fp32(model, adapter: Path, manifest: dict) -> None:
    """Put the adapter's own fp32 LoRA factors back into ``model``, which loaded them in the base's dtype.

    PEFT's merge then adds scaling * B @ A to each weight in fp32 and rounds once to the base's dtype, as the
    streamed merge does, rather than rounding the factors and their product first.
    """
    from medtune.tuning.adapter import read_adapter_state
    from medtune.tuning.methods.lora import FACTORS

    params = dict(model.named_parameters())
    for name, tensor in read_adapter_state(adapter, manifest).items():
        if name in params and any(f in name for f in FACTORS):
            params[name].data = tensor.float()


def chat_template(template: PromptTemplate, *, bos: bool | None = None) -> str:
    """Return a Jinja chat template rendering ``template``'s prompt exactly as medtune's collator builds it.

    One image per conversation, where the template puts it; the question is the user's text with whitespace
    collapsed and stray image placeholders removed (what ``PromptTemplate.prompt_parts`` does); later user turns
    take the template's turn format, as the collator writes a conversation's history. ``bos`` says whether the
    text starts with the BOS token (default: where the template has one); pass False for a tokenizer that adds
    BOS itself (``prompt_bos``), or a served prompt would start with two. Literal text is written as quoted
    expressions, so Jinja's whitespace rules (trim_blocks, lstrip_blocks) cannot touch it.
    """
    if template.image_placeholder is None:
        raise ValueError(f"template {template.name!r} has no image placeholder; it has no chat template")
    head, tail = (json.dumps(part) for part in template.prompt_format.split("{question}"))
    answer_head, answer_tail = (json.dumps(part) for part in template.answer_format.split("{answer}"))
    placeholder = json.dumps(template.image_placeholder)
    question = f"{{{{ (ns.text | replace({placeholder}, ' ')).split() | join(' ') }}}}"
    if template.turn_format is None:
        no_turns = json.dumps(f"template {template.name!r} has no format for a later user turn")
        later = f"{{{{ raise_exception({no_turns}) }}}}"
    else:
        turn_head, turn_tail = (json.dumps(part) for part in template.turn_format.split("{question}"))
        later = f"{{{{ {turn_head} }}}}{question}{{{{ {turn_tail} }}}}"
    text = (
        "{% set ns = namespace(text='') %}"
        "{% if message['content'] is string %}{% set ns.text = message['content'] %}"
        "{% else %}{% for part in message['content'] if part['type'] == 'text' %}"
        "{% set ns.text = ns.text + ' ' + part['text'] %}{% endfor %}{% endif %}"
    )
    return (
        ("{{ bos_token }}" if (template.add_bos if bos is None else bos) else "")
        + "{% set turn = namespace(first=true) %}"
        + "{% for message in messages %}"
        + text
        + "{% if message['role'] == 'user' and turn.first %}"
        + f"{{{{ {head} }}}}{question}{{{{ {tail} }}}}"
        + "{% set turn.first = false %}"
        + f"{{% elif message['role'] == 'user' %}}{later}"
        + "{% elif message['role'] == 'assistant' %}"
        + f"{{{{ {answer_head} }}}}{{{{ ns.text | trim }}}}{{{{ {answer_tail} }}}}{{{{ eos_token }}}}"
        + "{% endif %}{% endfor %}"
    )


def write_processor(built: Built, folder: Path) -> None:
    """Save the tokenizer and a complete processor for ``built``: what AutoProcessor needs to build a working one."""
    from transformers import BlipProcessor, LlavaProcessor

    # preprocessor_config.json too: serving engines read the image processor from it, not the processor's copy.
    built.image_processor.save_pretrained(folder)
    if built.family == "miss":
        BlipProcessor(image_processor=built.image_processor, tokenizer=built.tokenizer).save_pretrained(
            folder
        )
        return
    if built.family == "vlm":  # the checkpoint's own processor and chat template: what it was tuned with
        from medtune.core_models.vlm_processor import save_processor

        save_processor(built.processor, folder)
        return
    config = built.model.config
    template = get_template(built.preset.template)
    if built.image_wrap is not None:
        raise UsageError(
            f"preset {built.preset.name!r} wraps image positions in {' and '.join(built.image_wrap)}, which "
            "LlavaProcessor cannot express; serve the adapter with `medtune predict` instead"
        )
    strategy = config.vision_feature_select_strategy
    processor = LlavaProcessor(
        image_processor=built.image_processor,
        tokenizer=built.tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=strategy,
        # CLIP towers put a CLS token before the patches; the "default" strategy drops it again.
        num_additional_image_tokens=1,
        image_token=built.tokenizer.convert_ids_to_tokens(config.image_token_index),
        chat_template=chat_template(template, bos=bool(prompt_bos(built.tokenizer, template))),
    )
    processor.save_pretrained(folder)


def generation_config(built: Built, run_config: dict):
    """Return the model's generation config with medtune's evaluation settings (greedy, the task's answer length)."""
    from transformers import GenerationConfig

    from medtune.tuning.datasets import MAX_NEW_TOKENS

    task = (run_config.get("dataset") or {}).get("task", "vqa")
    if built.family == "vlm":  # keep the release's own (its end-of-turn tokens stop generation)
        config = GenerationConfig.from_dict(built.model.generation_config.to_dict())
    else:
        config = GenerationConfig.from_model_config(built.model.config)
    config.max_new_tokens = run_config.get("max_new_tokens") or MAX_NEW_TOKENS.get(task, 8)
    config.do_sample = False
    if built.family != "miss" and config.pad_token_id is None:
        config.pad_token_id = built.tokenizer.pad_token_id or built.tokenizer.eos_token_id
    return config


def merged_bytes(plan, built: Built) -> int:
    """Return the bytes the merged checkpoint's tensors take: from the streamed plan's shapes, else the model's."""
    if plan is not None:
        return sum(
            math.prod(plan.shape[name]) * plan.out_dtype(name).itemsize
            for name in dict.fromkeys(plan.saved.values())
        )
    return sum(t.numel() * t.element_size() for t in built.model.state_dict().values())


def export_merged(
    adapter: Path,
    out: Path,
    model_path: str | None = None,
    *,
    force: bool = False,
    max_shard_size: str = DEFAULT_SHARD,
    stream: bool = True,
) -> Path:
    """Write the merged, servable checkpoint to ``out`` via a temporary folder renamed into place.

    ``stream``: merge tensor by tensor where the base allows (False: always rebuild the merged model in memory).
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; choose a new folder (nothing was written)")
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(
            f"--out {out} exists and is not empty; choose a new folder, or pass --force to replace it "
            "(nothing was written)"
        )
    if isinstance(max_shard_size, str) and not re.fullmatch(
        r"\s*\d+(\.\d+)?\s*[KMGT]B\s*", max_shard_size, re.I
    ):
        raise UsageError(
            f"--max-shard-size {max_shard_size!r} is not a size; write it as 5GB, 500MB or 200KB (nothing was "
            "written)"
        )
    manifest = read_manifest(adapter)
    plan, reason = None, "streaming was turned off"
    if stream:
        try:
            plan = plan_merge(Path(adapter), manifest, model_path)
        except NotStreamable as why:
            reason = str(why)
    if plan is not None:
        found = base_fingerprint(plan)  # load_adapter's check, from 64 values read per tensor
        if found != manifest.get("base_fingerprint"):
            raise AdapterError(
                f"adapter {adapter} was made for another base model (fingerprint "
                f"{manifest.get('base_fingerprint')}, this model's is {found}); load the base it was tuned on "
                f"(preset {manifest.get('preset')!r}, source {manifest.get('base_source')!r})"
            )
    built = plan.built if plan is not None else merged_model(adapter, model_path)
    dtype = plan.dtype if plan is not None else next(built.model.parameters()).dtype
    if manifest.get("trained_4bit"):
        print(
            f"{adapter} was tuned on 4-bit (NF4) frozen weights; merged into the full-precision base and "
            f"saved in its precision ({str(dtype).removeprefix('torch.')})"
        )
    run_file = Path(adapter).parent / CONFIG
    run_config = json.loads(run_file.read_text()) if run_file.is_file() else {}
    check_free_space(out.parent, merged_bytes(plan, built), "merged export", "--out")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if plan is not None:
        tensors, shards = write_merged(plan, tmp, max_shard_size)
        write_config(plan, tmp)
        print(
            f"merged tensor by tensor (streamed from {plan.built.source}): {tensors} tensors in {shards} "
            f"shard(s), one tensor in memory at a time"
        )
    else:
        built.model.save_pretrained(tmp, max_shard_size=max_shard_size)  # shards written one at a time
        print(f"merged in memory (the whole model was loaded): {reason}")
    write_processor(built, tmp)
    generation_config(built, run_config).save_pretrained(tmp)
    (tmp / "README.md").write_text(model_card(built, manifest, run_config, Path(adapter)))
    return replace_folder(tmp, out)
