"""The `medtune` command: `medtune train|params|eval|report|bench|export ...`."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from medtune.tuning import commands
from medtune.tuning.errors import user_errors


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with one sub-command per module in medtune.tuning.commands."""
    parser = argparse.ArgumentParser(
        prog="medtune", description="Fine-tune medical vision-language models with LN-tuning and friends."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"medtune.tuning.commands.{info.name}")
        command = module.add_parser(sub)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command; user errors (``errors.user_errors``) print one sentence and return 2."""
    # bitsandbytes' CPU backend warns at import that it cannot fetch an optional kernel from a hub;
    # medtune never downloads, and its fallback is the one we want.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except Exception as err:
        if not isinstance(err, user_errors()):
            raise  # anything else is a medtune bug: keep its traceback
        print(f"medtune {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from medtune.tuning.run_dir import interrupted_hint  # stdlib only: cheap even here

        print(f"\ninterrupted{interrupted_hint()}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
