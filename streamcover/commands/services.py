"""Handlers that the service package lends to the library commands still living here.

``monitor`` and ``setlist`` (``commands/monitor.py``) are registered by the library but run
Kafka services. The library never imports ``consumers``: the full command
(``consumers.cli``) hands those handlers over with :func:`provide` before it parses, and
:func:`run_service` looks them up. Transitional: once ``commands/monitor.py`` moves to
``consumers/commands/``, it calls the services directly and this module goes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

Handler = Callable[[argparse.Namespace], Any]

_HANDLERS: dict[str, Handler] = {}


def provide(handlers: Mapping[str, Handler]) -> None:
    """Install the service package's handlers, by the names the commands ask for."""
    _HANDLERS.update(handlers)


def run_service(entry: str, args: argparse.Namespace) -> Any:
    """Call the handler the service package provided as ``entry``."""
    handler = _HANDLERS.get(entry)
    if handler is None:
        from streamcover.cli import CliError

        raise CliError(f"{entry!r} is a Kafka service: run it with the `streamcover` command "
                       "(consumers.cli), which provides it")
    return handler(args)
