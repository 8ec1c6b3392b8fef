"""The library's half of the ``streamcover`` command: its parser, its commands, its main loop.

Each library subcommand lives in ``streamcover/commands/<name>.py`` and exposes
``register(subparsers)``. Heavy imports (torch, faiss) happen inside the handlers so
``streamcover --help`` stays fast. The installed ``streamcover`` command is
``consumers.cli:main``: it adds the Kafka services' commands to these, so imports go one
way, from the services to the library (``docs/architecture.md``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from streamcover import __version__
from streamcover.commands import calibrate, catalog, corpus, embed, identify, train
from streamcover.commands import eval as evaluate
from streamcover.config import get_settings
from streamcover.log import configure_logging

Register = Callable[[argparse._SubParsersAction], None]
"""A command module's ``register``: adds its subparser(s) and their handlers."""

# Order is the order shown in --help (after the service commands, in the full command).
LIBRARY_COMMANDS: tuple[Register, ...] = (
    catalog.register,
    identify.register,
    embed.register,
    train.register,
    evaluate.register,
    calibrate.register,
    corpus.register,
)


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def build_parser(commands: Sequence[Register] = LIBRARY_COMMANDS) -> argparse.ArgumentParser:
    """The ``streamcover`` parser with ``commands`` (by default the library's only)."""
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
    for register in commands:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None,
         commands: Sequence[Register] = LIBRARY_COMMANDS) -> int:
    """Parse ``argv``, configure logging and run the chosen command; the exit status."""
    parser = build_parser(commands)
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
