"""`streamcover monitor` and `setlist`: the streaming monitor service (``consumers.monitor``,
``consumers.workers``) and the on-demand set list (``consumers.cli_tools``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "monitor",
        help="run the monitor: audio topic -> match events (Kafka transactions, Prometheus metrics)",
        description="Consume audio frames, embed 20 s windows every 10 s, search the catalog and "
        "emit match events, set lists and dead letters. Settings: STREAMCOVER_* environment "
        "variables (see docs/monitor.md). SIGTERM drains, commits and exits.",
    )
    p.add_argument("--instance-id", default=None,
                   help="stable id of this instance (transactional id suffix; one per running monitor)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (0: any free port)")
    p.add_argument("--catalog", type=Path, default=None, help="catalog directory (default: settings)")
    p.add_argument("--workers", type=_positive, default=1,
                   help="run N monitor processes in one consumer group under a supervisor that "
                   "forwards signals and restarts a dead worker (instance ids ID-w0 … ID-wN-1, "
                   "metrics ports P … P+N-1)")
    p.set_defaults(handler=_run)

    s = sub.add_parser("setlist", help="ask the monitor for a live stream's whole set list")
    s.add_argument("stream_id")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    s.set_defaults(handler=_setlist)


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "workers", 1) > 1:
        from consumers.workers import main as workers_main

        return int(workers_main(args) or 0)
    from consumers.monitor_main import main

    return int(main(args) or 0)


def _setlist(args: argparse.Namespace) -> int:
    from consumers.cli_tools import setlist_main

    return int(setlist_main(args) or 0)
