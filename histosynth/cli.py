"""`histosynth <verb>`: the command line. Each verb lives in histosynth/commands/<verb>.py.

Command modules import nothing heavy at import time (torch, datasets) so `histosynth ls` and `--help`
stay fast; they import what they need inside their handlers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import Sequence

from histosynth.errors import UserFacingError

COMMAND_MODULES = ("histosynth.commands.ls", "histosynth.commands.data", "histosynth.commands.train",
                   "histosynth.commands.generate", "histosynth.commands.bench", "histosynth.commands.demo",
                   "histosynth.commands.hub", "histosynth.commands.leaderboard", "histosynth.commands.submit",
                   "histosynth.commands.recipe", "histosynth.commands.new")


class CommandError(UserFacingError):
    """A user-facing failure of a verb itself (not of one input): printed as `error: ...`, exit code 2."""


class UsageError(SystemExit):
    """A command line argparse refused (a bad option value, a missing or unknown option); already printed."""


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's one error style: a bad command line is one `error: ...` line and exit code 2, like
    every other user error (sub-parsers are made of this class too)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {' '.join(message.split())} (see `{self.prog} --help`)", file=sys.stderr)
        raise UsageError(2)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one sub-parser per verb."""
    parser = Parser(
        prog="histosynth",
        description="Synthetic histopathology dataset factory and benchmark suite. "
        "Run `histosynth <verb> --help` for each verb.",
    )
    parser.add_argument("--traceback", action="store_true",
                        help="show the traceback of user errors too (other errors always show theirs)")
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `histosynth` script; returns the exit code.

    A UserFacingError becomes one `error: ...` line and exit 2; any other exception is a bug and propagates
    with its traceback (exit 1)."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as err:
        return int(err.code)
    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except UserFacingError as err:
        if args.traceback:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
