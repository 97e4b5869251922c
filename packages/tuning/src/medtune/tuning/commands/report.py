"""`medtune report RUN_DIR... --out DIR`: the paper's tables and plots from your runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from medtune.tuning.errors import UsageError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="paper-style tables (Markdown + CSV) and plots from run directories")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report)")
    return p


def run(args: argparse.Namespace) -> int:
    from medtune.eval import write_report

    try:
        written = write_report(args.runs, args.out)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    for path in written:
        print(path)
    return 0
