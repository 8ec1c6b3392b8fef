"""Measure the local Kafka broker's start time (launch to ready) and print medians.

    nice -n 10 .venv/bin/python ops/bench/broker_startup.py --runs 5

"Start" is from the StorageTool format (a JVM of its own) to the first successful admin
metadata call, i.e. what a test session waits for once the jars are cached. Runs alternate
with and without the class-data-sharing archive so both see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from consumers.broker import KafkaBroker, fetch_jars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sasl-ssl", action="store_true", help="also open the SASL_SSL listener")
    args = parser.parse_args()
    fetch_jars()
    # One warm-up run creates the CDS archive (if not there yet) and warms the page cache.
    with KafkaBroker(sasl_ssl=args.sasl_ssl):
        pass
    results: dict[str, list[float]] = {"cds": [], "no-cds": []}
    stops: list[float] = []
    for i in range(args.runs):
        for label in ("cds", "no-cds") if i % 2 == 0 else ("no-cds", "cds"):
            broker = KafkaBroker(sasl_ssl=args.sasl_ssl, class_data_sharing=label == "cds")
            broker.start()
            assert broker.startup_seconds is not None
            results[label].append(broker.startup_seconds)
            t0 = time.monotonic()
            broker.stop()
            stops.append(time.monotonic() - t0)
            print(f"run {i + 1} {label:7s} start {broker.startup_seconds:6.2f} s", flush=True)
    load = os.getloadavg()[0]
    for label, values in results.items():
        print(
            f"{label:7s} median start {statistics.median(values):.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
        )
    print(f"median stop (SIGTERM to exit) {statistics.median(stops):.2f} s")
    print(f"1-min load average at the end: {load:.1f} on {os.cpu_count()} cores (shared machine)")


if __name__ == "__main__":
    main()
