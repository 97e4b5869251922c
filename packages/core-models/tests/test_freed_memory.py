"""keep_returning_freed_memory: a freed tensor-sized block leaves the process (glibc), where the heap would keep it."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A 16 MB tensor freed once raises glibc's adaptive threshold; the next one comes from the heap, and a small
# block allocated after it pins the heap's top, so freeing it returns nothing. The script prints how many MB
# of resident memory freeing that second tensor gave back.
SCRIPT = """
import sys, torch
from medtune.core_models.weights import keep_returning_freed_memory
if sys.argv[1] == "keep":
    keep_returning_freed_memory()
def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
first = torch.ones(4 * 2**20)  # 16 MB (glibc adapts its threshold up to 32 MB)
del first
second = torch.ones(4 * 2**20 - 2**16)  # a little smaller than the first: served from the heap
pin = torch.ones(64 * 1024)  # 256 KB after it
before = rss_mb()
del second
print(round(before - rss_mb()))
"""


def _returned_mb(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux only")
def test_a_freed_tensor_leaves_the_process_only_with_the_setting():
    assert _returned_mb("keep") >= 14
    assert _returned_mb("default") <= 2  # what a CPU run kept before: its heap's high-water mark
