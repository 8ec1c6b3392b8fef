"""The one logger setup: JSON lines in services, readable console output in the CLI.

Libraries that log through the stdlib ``logging`` (aiokafka, faiss, PyAV) are rendered by
the same structlog processors, so a service's stderr is one format. Their records pass at
WARNING and above; a few conditions aiokafka logs as ERROR although it retries them and
they are normal while a broker starts (no group coordinator elected yet) are demoted to
INFO by :class:`TransientKafkaFilter`.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

_handler: logging.Handler | None = None

# aiokafka errors that only mean "the coordinator is not there yet": aiokafka looks it up
# again after a backoff, so they are progress reports, not failures.
TRANSIENT_KAFKA_ERRORS = frozenset({
    "GroupCoordinatorNotAvailableError",
    "NotCoordinatorForGroupError",
    "GroupLoadInProgressError",  # alias CoordinatorLoadInProgressError
})


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at call time, not at configure time, so loggers
    keep working when stderr is swapped (pytest capture, daemonising, redirection)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class TransientKafkaFilter(logging.Filter):
    """Demote aiokafka's ERROR records about a retried, transient coordinator condition
    to INFO; every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.name.startswith("aiokafka"):
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            if any(type(a).__name__ in TRANSIENT_KAFKA_ERRORS for a in args):
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class _LevelGate(logging.Filter):
    """Drops records under ``level`` (after demotion: the handler's own level is checked
    before its filters run, so the gate is a filter placed after the demotion)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto"
) -> None:
    """Configure structlog and the stdlib root logger (idempotent; the last call wins).

    ``auto`` picks console output on a terminal and JSON otherwise, so services
    under a supervisor log machine-readable lines by default.
    """
    global _handler
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
    # Stdlib records (libraries) through the same processors, at WARNING and above.
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    handler.addFilter(TransientKafkaFilter())
    lib_level = max(numeric, logging.WARNING)
    handler.addFilter(_LevelGate(lib_level))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(lib_level)
    _handler = handler


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to a component name."""
    log: structlog.stdlib.BoundLogger = structlog.get_logger(name) if name else structlog.get_logger()
    return log
