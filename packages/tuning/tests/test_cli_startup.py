"""The `medtune` parser and every `medtune COMMAND --help` start without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets", "numpy")


def test_building_the_parser_imports_no_heavy_library():
    code = (
        "import sys; from medtune.tuning.cli import build_parser; build_parser(); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("command", ["train", "params", "eval", "export", "report", "bench", None])
def test_every_help_exits_0_without_torch(command):
    argv = ["--help"] if command is None else [command, "--help"]
    code = (
        "import sys; from medtune.tuning.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "usage: medtune" in out.stdout


def test_the_lazy_registries_hold_every_builtin():
    from medtune.core_models import PRESETS, default_preset
    from medtune.tuning.methods import BUILTIN_METHODS, METHODS

    assert set(BUILTIN_METHODS) <= set(METHODS)
    assert default_preset("llava").name in PRESETS


def test_the_scorer_flag_offers_exactly_the_eval_variants():
    from typing import get_args

    from medtune.eval.vqa import ScorerVariant
    from medtune.tuning.commands import SCORERS

    assert get_args(ScorerVariant) == SCORERS
