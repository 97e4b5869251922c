"""Rebuild a tuned model from its adapter's manifest: the base it names, the method with its stored config."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medtune.core_models import Built, load
from medtune.tuning.adapter import PEFT_WEIGHTS, load_adapter, read_manifest
from medtune.tuning.errors import AdapterError, UsageError


def base_source(manifest: dict, model_path: str | Path | None) -> str | None:
    """Return the checkpoint to load: ``model_path``, else the manifest's; None for the bundled demo weights."""
    source = model_path or manifest.get("base_source")
    return None if source in (None, "random init") else str(source)


def rebuild_key(manifest: dict, model_path: str | Path | None = None) -> str:
    """Return what identifies the model an adapter needs: adapters with equal keys swap into one model."""
    keys = ("preset", "method", "paradigm", "method_config", "method_details", "format")
    return json.dumps([base_source(manifest, model_path), *(manifest.get(k) for k in keys)], sort_keys=True)


def base_for_manifest(
    manifest: dict,
    model_path: str | Path | None = None,
    *,
    adapter: Path | None = None,
    vision_tower: str | Path | None = None,
    dtype: torch.dtype | None = None,
) -> Built:
    """Return the manifest's base with its method applied as stored, ready for ``load_adapter`` (no tensors yet)."""
    from medtune.core_models import PRESETS, get_preset
    from medtune.tuning.apply import apply_paradigm
    from medtune.tuning.methods import get_method
    from medtune.tuning.paradigm import Paradigm

    where = adapter or "the adapter"
    source = base_source(manifest, model_path)
    try:
        family = get_preset(manifest["preset"]).family
    except ValueError:
        family = None
    if family != manifest["family"]:
        what = "no preset medtune knows" if family is None else f"a {family} preset, not {manifest['family']}"
        raise AdapterError(
            f"{where}/manifest.json names preset {manifest['preset']!r}, {what}; it was written by another medtune "
            f"or edited by hand: use the medtune that trained it (presets here: {', '.join(sorted(PRESETS))})"
        )
    try:
        built = load(
            manifest["preset"], source, vision_tower=vision_tower, **({"dtype": dtype} if dtype else {})
        )
    except (FileNotFoundError, ValueError) as err:
        raise AdapterError(
            f"cannot load the base of {where} (preset {manifest['preset']!r}, source {source or 'bundled'}): "
            f"{str(err).rstrip('.')}; pass --model-path with a checkpoint of that preset"
        ) from None
    method = get_method(manifest["method"])
    try:
        config = method.config_from_manifest(manifest)
    except (TypeError, ValueError) as err:
        raise AdapterError(
            f"{where}'s manifest holds a {method.name} config medtune cannot read: {err}"
        ) from None
    in_peft_layout = adapter is not None and (Path(adapter) / PEFT_WEIGHTS).is_file()
    options = (
        method.peft.load_options(config)
        if in_peft_layout and method.peft is not None and method.peft.load_options is not None
        else config.options()
    )
    paradigm = Paradigm.parse(manifest["paradigm"], manifest["family"])
    built.model = apply_paradigm(built.model, manifest["family"], method.name, paradigm, options).model
    return built


def rebuild_from_manifest(
    adapter_path: str | Path,
    model_path: str | Path | None = None,
    *,
    vision_tower: str | Path | None = None,
    dtype: torch.dtype | None = None,
) -> Built:
    """Return the adapter's base (``model_path`` or the manifest's) with its method applied and tensors loaded."""
    adapter_path = Path(adapter_path)
    manifest = read_manifest(adapter_path)
    built = base_for_manifest(
        manifest, model_path, adapter=adapter_path, vision_tower=vision_tower, dtype=dtype
    )
    load_adapter(built.model, adapter_path)
    return built


def preset_for_folder(model_path: str | Path, preset: str | None = None) -> str:
    """Return ``preset``, or the bundled preset whose weights ``model_path`` is; otherwise say to pass --preset."""
    from medtune.core_models import PRESETS
    from medtune.core_models.presets import register_builtin_presets
    from medtune.core_models.vlm import model_classes, preset_for_checkpoint

    if preset:
        return preset
    register_builtin_presets()
    folder = Path(model_path).expanduser().resolve()
    for known in PRESETS.values():
        if known.default_weights is not None and Path(known.default_weights).resolve() == folder:
            return known.name
    config = folder / "config.json"
    architectures = _architectures(config) if config.is_file() else []
    if set(architectures) & set(model_classes()):  # a vlm checkpoint names its own preset
        return preset_for_checkpoint(folder).name
    raise UsageError(
        f"which preset is {model_path}? pass --preset (one of: {', '.join(sorted(PRESETS))}); it fixes the "
        "architecture and the prompt template the answers are asked in"
    )


def _architectures(config: Path) -> list:
    """Return the architectures a checkpoint's config.json names; a file that does not parse is a sentence."""
    try:
        data = json.loads(config.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(
            f"{config} is not valid JSON ({err}); copy the checkpoint's config.json again"
        ) from None
    names = data.get("architectures") if isinstance(data, dict) else None
    return names if isinstance(names, list) else []


def load_base_alone(model_path: str | Path, preset: str | None = None) -> Built:
    """Return an untuned base checkpoint (a zero-shot baseline), its preset given or found from the folder."""
    name = preset_for_folder(model_path, preset)
    try:
        return load(name, model_path)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"--model-path {model_path}: {err}") from None
