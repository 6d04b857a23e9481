"""``python -m converter <command>``: a dispatcher; each command module registers its own sub-parser."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from converter.progress import reporting

# "module:function" entries: each ``add_<name>_parser(subparsers)`` sets ``func`` on its parser.
SUBCOMMANDS: tuple[str, ...] = (
    "converter.cli.train:add_train_parser",
    "converter.cli.convert:add_convert_parser",
    "converter.cli.evaluate:add_evaluate_parser",
    "converter.cli.evaluate:add_sweep_parser",
)


class CommandError(Exception):
    """A user error (bad path, bad value, unknown name): printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Report a usage error without the usage block."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = OneLineParser(
        prog="python -m converter", description="Train and convert CNNs to TSC spiking nets."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in SUBCOMMANDS:
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function)(subparsers)
    for command in subparsers.choices.values():
        command.add_argument(
            "--quiet", action="store_true", help="no progress: neither bars nor a line per stage on stderr"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: report the status instead of exiting
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with reporting(quiet=args.quiet):
            return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
