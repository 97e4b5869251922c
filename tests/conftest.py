"""Cross-package tests write demo data to a throw-away cache, never the user's."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _demo_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDTUNE_CACHE", str(tmp_path_factory.mktemp("medtune-cache")))
    yield
    mp.undo()
