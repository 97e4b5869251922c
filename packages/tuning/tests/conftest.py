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
