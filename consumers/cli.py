"""The ``streamcover`` command: the library's commands plus the Kafka services' own.

The service package owns the entry point so that imports go one way, from the services
to the library: ``streamcover.cli`` builds a parser from the command modules it is given,
and this module gives it the service commands (``consumers.commands``) before the
library's. ``python -m consumers`` is the same command (``docs/architecture.md``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from consumers.commands import broker, demo, mic, monitor, send
from streamcover import cli

# Order is the order shown in --help: the services first, as before the split.
COMMANDS: tuple[cli.Register, ...] = (
    demo.register,
    monitor.register,
    send.register,
    mic.register,
    broker.register,
    *cli.LIBRARY_COMMANDS,
)


def build_parser() -> argparse.ArgumentParser:
    """The full ``streamcover`` parser: every subcommand, services and library."""
    return cli.build_parser(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the installed ``streamcover`` command."""
    return cli.main(argv, COMMANDS)
