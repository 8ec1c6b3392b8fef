"""`streamcover broker`: a real local Apache Kafka broker (KRaft) from Maven Central jars.

``broker fetch`` downloads the jars once (ops/setup.sh calls it); ``broker run`` starts a
combined broker+controller on 127.0.0.1 and prints the settings to reach it. The work is
done in ``consumers.broker`` (imported when the command runs, so ``--help`` stays fast).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from consumers.broker.jars import DEFAULT_KAFKA_VERSION


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker",
        help="fetch or run a local Kafka broker (tests, demo, development)",
        description=__doc__,
    )
    actions = p.add_subparsers(dest="broker_action", metavar="ACTION", required=True)
    fetch = actions.add_parser("fetch", help="download the Kafka broker jars (Maven) and exit")
    run = actions.add_parser(
        "run", help="start a local broker, print how to reach it, stop on Ctrl-C/SIGTERM"
    )
    for a in (fetch, run):
        a.add_argument("--kafka-version", default=DEFAULT_KAFKA_VERSION,
                       help="broker version (default %(default)s)")
        a.set_defaults(handler=_run)
    fetch.add_argument("--force", action="store_true", help="fetch again even if present")
    run.add_argument("--port", type=int, default=9092,
                     help="PLAINTEXT port on 127.0.0.1; 0 picks a free one "
                          "(default %(default)s, matching kafka.bootstrap_servers)")
    run.add_argument("--sasl-ssl", action="store_true",
                     help="also open a SASL_SSL listener (SCRAM/PLAIN, throw-away CA)")
    run.add_argument("--sasl-ssl-port", type=int, default=0,
                     help="port of the SASL_SSL listener (0: any free port)")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="keep broker data here across runs (default: a temporary directory)")
    run.add_argument("--heap", default="512m", help="JVM -Xmx (default %(default)s)")


def _run(args: argparse.Namespace) -> int:
    from consumers.broker.cli import cli_main
    from consumers.broker.errors import BrokerError
    from streamcover.cli import CliError

    try:
        return cli_main(args)
    except BrokerError as exc:  # missing java/mvn, port in use, ...
        raise CliError(str(exc)) from exc
