"""`streamcover demo`: broker, catalog, monitor and three streams, end to end (``consumers.demo``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo: local broker, a small catalog, the monitor, three streams, a set list",
    )
    p.add_argument("--realtime", action="store_true", help="stream at playback speed (slow: minutes)")
    p.add_argument("--speed", type=float, default=8.0, help="streaming speed as a multiple of real time")
    p.add_argument("--verbose", action="store_true", help="also show the services' logs")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from consumers.demo import main

    return main(args)
