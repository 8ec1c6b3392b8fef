"""The one logger setup: JSON lines in services, readable console output in the CLI."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

_configured = False


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at call time, not at configure time, so loggers
    keep working when stderr is swapped (pytest capture, daemonising, redirection)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto"
) -> None:
    """Configure structlog and the stdlib root logger once per process.

    ``auto`` picks console output on a terminal and JSON otherwise, so services
    under a supervisor log machine-readable lines by default.
    """
    global _configured
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    numeric = logging.getLevelName(level.upper())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # Libraries (aiokafka, faiss) log through stdlib logging: route them to stderr at WARNING+.
    if not _configured:
        logging.basicConfig(stream=sys.stderr, level=max(numeric, logging.WARNING))
    _configured = True


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to a component name."""
    log: structlog.stdlib.BoundLogger = structlog.get_logger(name) if name else structlog.get_logger()
    return log
