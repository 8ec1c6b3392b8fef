"""The monitor's exit codes and :class:`MonitorExit`, which carries one of them.

Exit codes (docs/monitor.md "Broker faults"); sysexits.h names, so supervisors can tell a
transient fault (restart) from a configuration error (do not restart in a loop). No aiokafka
here: the ``--workers`` supervisor (``consumers.workers``) imports this module too.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_STATE_LOAD = 74  # EX_IOERR: checkpoints of an assigned partition could not be read
EXIT_BROKER = 75  # EX_TEMPFAIL: broker unreachable past monitor.broker_retry_seconds
EXIT_DUPLICATE = 78  # EX_CONFIG: another live monitor already uses this instance id
EXIT_NO_MODEL = 78  # EX_CONFIG: no encoder weights at encoder.model_path


class MonitorExit(Exception):
    """The monitor must stop: ``code`` is the process exit status, ``message`` says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
