"""Write tensors as a sharded safetensors checkpoint, the layout transformers and medtune load from disk."""

from __future__ import annotations

import json
from pathlib import Path


def write_shards(folder: Path, shards: list[dict]) -> int:
    """Write each dict of name -> tensor as ``model-0000i-of-0000n.safetensors`` beside the index naming them.

    Returns the number of shard files written.
    """
    from safetensors.torch import save_file

    weight_map = {}
    for i, tensors in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(tensors, file)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return len(shards)
