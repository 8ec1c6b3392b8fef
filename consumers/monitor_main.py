"""The ``streamcover monitor`` process (``consumers/commands/monitor.py``): settings from
the command line, the engine, the metrics endpoint, SIGTERM/SIGINT, and the exit status
(0, or one of the codes in ``consumers.exit_codes``)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from consumers.exit_codes import EXIT_NO_MODEL, EXIT_OK, MonitorExit
from consumers.monitor import run_monitor
from streamcover.config import Settings, get_settings
from streamcover.log import get_logger
from streamcover.model.loading import EncoderMissingError
from streamcover.monitor.engine import build_engine
from streamcover.monitor.metrics import Metrics, serve

log = get_logger(__name__)


def _apply_args(settings: Settings, args: argparse.Namespace) -> Settings:
    mon = settings.monitor.model_copy(update={
        k: v for k, v in {
            "instance_id": getattr(args, "instance_id", None),
            "metrics_port": getattr(args, "metrics_port", None),
        }.items() if v is not None
    })
    update: dict[str, Any] = {"monitor": mon}
    if getattr(args, "catalog", None):
        update["catalog"] = settings.catalog.model_copy(update={"path": args.catalog})
    return settings.model_copy(update=update)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``streamcover monitor`` (``consumers/commands/monitor.py``).
    Returns 0 after SIGTERM/SIGINT, or one of the EXIT_* codes of ``consumers.exit_codes``."""
    settings = _apply_args(get_settings(), args)
    try:
        engine = build_engine(settings)
    except EncoderMissingError as exc:
        log.error("monitor_exit", code=EXIT_NO_MODEL, reason=str(exc))
        return EXIT_NO_MODEL
    metrics = Metrics()
    port = serve(metrics, settings.monitor.metrics_host, settings.monitor.metrics_port)
    log.info("metrics_endpoint", url=f"http://{settings.monitor.metrics_host}:{port}/metrics")

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_monitor(settings, engine, stop, metrics)

    try:
        asyncio.run(_main())
    except MonitorExit as exc:
        log.error("monitor_exit", code=exc.code, reason=exc.message)
        return exc.code
    return EXIT_OK
