"""The ``streamcover`` command: one entry point, one subcommand per job.

Each subcommand lives in ``streamcover/commands/<name>.py`` and exposes
``register(subparsers)``. Heavy imports (torch, faiss, aiokafka) happen inside
the handlers so ``streamcover --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from streamcover import __version__
from streamcover.config import get_settings
from streamcover.log import configure_logging

# Order is the order shown in --help.
COMMAND_MODULES = (
    "demo",
    "monitor",
    "send",
    "mic",
    "broker",
    "catalog",
    "identify",
    "embed",
    "train",
    "eval",
    "calibrate",
    "corpus",
)


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamcover",
        description="Hear catalogued songs (originals, remixes, covers) in live audio and uploads.",
    )
    parser.add_argument("--version", action="version", version=f"streamcover {__version__}")
    parser.add_argument(
        "--log-format", choices=["auto", "json", "console"], default=None,
        help="log output (default: settings, console on a terminal)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"streamcover.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, args.log_format or settings.log_format)
    try:
        result = args.handler(args)
    except CliError as exc:
        print(f"streamcover {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)
