"""Tuning tests write demo data to one throw-away cache per session, never the user's."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """Return the session's MEDTUNE_CACHE folder (also set in the environment for subprocesses)."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("medtune-cache")
    mp.setenv("MEDTUNE_CACHE", str(path))
    assert os.environ["MEDTUNE_CACHE"] == str(path)
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def small_demo(demo_cache, tmp_path_factory):
    """Return a Slake-format copy of the demo set with a few questions per split, for tests that score."""
    import json

    from medtune.data import demo_dataset

    source = demo_dataset("downstream")
    folder = tmp_path_factory.mktemp("small-demo") / source.name
    folder.mkdir()
    (folder / "imgs").symlink_to(source / "imgs")
    for split in sorted(source.glob("*.json")):
        (folder / split.name).write_text(json.dumps(json.loads(split.read_text())[:6]))
    return folder


@pytest.fixture(scope="session")
def model_logits():
    """Return a function giving a built model's teacher-forced logits (batch, seq, vocab) on records."""
    import torch

    from medtune.tuning.batches import make_collator

    def logits(built, records) -> torch.Tensor:
        batch = make_collator(built, train=True)(records)
        batch.pop("qids")
        built.model.eval()
        with torch.no_grad():
            return built.model(**batch).logits

    return logits
