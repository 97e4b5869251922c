"""benchmarks/gpu_checks.sh, the one-go GPU session script: its plumbing, checked where there is no GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_checks.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(tmp_path: Path, *stages: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "PYTHONPATH": ""}
    # Run from elsewhere: the script must find the checkout from its own path.
    return subprocess.run(
        ["bash", str(SCRIPT), *stages], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_env_stage_imports_medtune_from_the_checkout_and_logs_a_summary(tmp_path):
    done = _run(tmp_path, "env")
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "out" / "checks.log").read_text()
    # PYTHONPATH was emptied above: medtune.kernels can only come from the script's own src paths.
    assert "medtune.kernels  (from this checkout)" in log
    assert "torch " in log and "cuda:" in log
    assert "env: exit 0, " in log.split("== summary", 1)[1]


def test_an_unknown_stage_stops_before_any_stage_runs(tmp_path):
    done = _run(tmp_path, "env", "kernals")
    assert done.returncode == 2
    assert "unknown stage 'kernals'" in done.stderr
    assert not (tmp_path / "out" / "checks.log").exists()
