"""`medtune bench [all|methods|kernels] [ARGS...]`: end-to-end method benchmark and norm-kernel micro-benchmarks.

Both benchmarks are scripts in the repository's ``benchmarks/`` folder (they are data-producing tools, not library
code); this command finds that folder from the working directory or from this source checkout and runs the script's
``main(argv)`` with the remaining arguments.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from medtune.tuning.errors import UsageError

SCRIPTS = {
    "methods": Path("benchmarks/methods/bench_methods.py"),
    "kernels": Path("benchmarks/kernels/bench_norms.py"),
}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="benchmark the tuning methods end to end and the fused norm kernels",
        description="Run benchmarks/methods/bench_methods.py (methods) or benchmarks/kernels/bench_norms.py "
        "(kernels); arguments after the suite go to the script (`medtune bench methods -- --help`).",
    )
    p.add_argument(
        "suite",
        nargs="?",
        default="all",
        choices=["all", *sorted(SCRIPTS)],
        help="all (default): the kernels where a GPU is visible, then the methods",
    )
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="passed to the benchmark script")
    return p


def find_script(relative: Path) -> Path | None:
    """Return the benchmark script under the working directory or this source checkout, or None."""
    here = Path(__file__).resolve()
    roots = [Path.cwd(), *here.parents]
    for root in roots:
        candidate = root / relative
        if candidate.is_file():
            return candidate
    return None


def run_suite(suite: str, argv: list[str]) -> int:
    """Run one benchmark script's ``main(argv)`` and return its exit status."""
    script = find_script(SCRIPTS[suite])
    if script is None:
        raise UsageError(
            f"the {suite} benchmark lives in the medtune repository at {SCRIPTS[suite]}, which is not under "
            "this directory or the installed source; run this command from a medtune checkout"
        )
    spec = importlib.util.spec_from_file_location(f"medtune_bench_{suite}", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    try:
        return int(module.main(argv) or 0)
    except SystemExit as exit_:  # argparse inside the script: --help or a bad flag
        return exit_.code if isinstance(exit_.code, int) else 1


def run(args: argparse.Namespace) -> int:
    argv = [a for a in args.script_args if a != "--"]
    if args.suite != "all":
        return run_suite(args.suite, argv)
    import torch

    if torch.cuda.is_available():
        status = run_suite("kernels", [])
        if status:
            return status
    else:
        print(f"kernels: skipped, no CUDA GPU visible ({SCRIPTS['kernels']} needs one)")
    return run_suite("methods", argv)
