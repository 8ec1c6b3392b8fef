"""``streamcover broker fetch|run``: fetch the jars, or run a broker until Ctrl-C/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from consumers.broker.errors import BrokerError
from consumers.broker.jars import fetch_jars, jars_present, libs_dir
from consumers.broker.process import KafkaBroker


def env_lines(broker: KafkaBroker) -> list[str]:
    """The ``STREAMCOVER_KAFKA__*`` lines ``broker run`` prints; the password by file only."""
    lines = [f"STREAMCOVER_KAFKA__BOOTSTRAP_SERVERS={broker.bootstrap_servers}"]
    if broker.sasl_ssl:
        lines += [
            "# SASL_SSL listener:",
            f"STREAMCOVER_KAFKA__BOOTSTRAP_SERVERS={broker.sasl_ssl_bootstrap_servers}",
            "STREAMCOVER_KAFKA__SECURITY_PROTOCOL=SASL_SSL",
            "STREAMCOVER_KAFKA__SASL_MECHANISM=SCRAM-SHA-512",
            f"STREAMCOVER_KAFKA__SASL_USERNAME={broker.sasl_username}",
            f'STREAMCOVER_KAFKA__SASL_PASSWORD="$(cat {broker.password_file()})"',
            f"STREAMCOVER_KAFKA__SSL_CAFILE={broker.ssl_cafile}",
        ]
    return lines


class _Terminated(BaseException):
    """Raised from the SIGTERM handler so `with KafkaBroker()` unwinds and stops the JVM."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def cli_main(args: argparse.Namespace) -> int:
    """Entry point behind ``streamcover broker``."""
    if args.broker_action == "fetch":
        t0 = time.monotonic()
        present = jars_present(libs_dir(args.kafka_version)) and not args.force
        libs = fetch_jars(args.kafka_version, force=args.force)
        how = "already present" if present else f"fetched in {time.monotonic() - t0:.1f} s"
        print(f"kafka {args.kafka_version} jars in {libs} ({how})")
        return 0
    if args.broker_action != "run":
        raise BrokerError(f"unknown broker action {args.broker_action!r}")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with KafkaBroker(
            version=args.kafka_version, port=args.port, sasl_ssl=args.sasl_ssl,
            sasl_ssl_port=args.sasl_ssl_port, data_dir=args.data_dir, heap=args.heap,
        ) as broker:
            print(f"kafka {broker.version} ready in {broker.startup_seconds:.1f} s "
                  f"(log: {broker.log_path})")
            for line in env_lines(broker):
                print(line)
            print("Ctrl-C or SIGTERM stops the broker.", flush=True)
            while True:
                code = broker.poll()
                if code is not None:
                    print(f"kafka broker exited unexpectedly with status {code}; log tail:\n"
                          f"{broker.log_tail()}", file=sys.stderr)
                    return 1
                time.sleep(0.5)
    except (KeyboardInterrupt, _Terminated):
        print("kafka broker stopped", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
