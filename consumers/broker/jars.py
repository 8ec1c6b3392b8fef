"""The Kafka broker's jars: fetched once from Maven Central (``ops/kafka/pom.xml``) into the cache.

Idempotent and safe across processes: a marker file records a complete fetch, and a file lock
keeps two processes (parallel test runs, several engineers) from fetching at once.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from consumers.broker.errors import BrokerError
from streamcover.config import PROJECT_ROOT, default_cache_dir
from streamcover.files import file_lock
from streamcover.log import get_logger

log = get_logger(__name__)

DEFAULT_KAFKA_VERSION = "4.4.0"
"""Broker version the pom fetches by default (see docs/broker.md for why)."""

OPS_DIR = PROJECT_ROOT / "ops" / "kafka"
POM_PATH = OPS_DIR / "pom.xml"
LOG4J2_CONFIG = OPS_DIR / "log4j2.xml"

_COMPLETE_MARKER = ".streamcover-complete"


def libs_dir(version: str = DEFAULT_KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """Where the jars of one Kafka version live (outside the work tree)."""
    return (cache_dir or default_cache_dir()) / "kafka" / version / "libs"


def jars_present(libs: Path) -> bool:
    """True when a previous fetch completed into ``libs``."""
    return (libs / _COMPLETE_MARKER).is_file() and any(libs.glob("kafka_2.13-*.jar"))


def fetch_jars(
    version: str = DEFAULT_KAFKA_VERSION,
    *,
    cache_dir: Path | None = None,
    force: bool = False,
    quiet: bool = True,
    log4j2_version: str | None = None,
) -> Path:
    """Copy the broker jars from Maven Central into the cache, unless already there.

    Idempotent: a marker file records a complete fetch, and a file lock keeps two processes
    from fetching at once. Returns the directory holding the jars.
    """
    libs = libs_dir(version, cache_dir)
    if jars_present(libs) and not force:
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven ('mvn') is not on PATH; it is needed once to fetch the Kafka jars "
            "(apt-get install -y maven, or run ops/setup.sh)"
        )
    if not POM_PATH.is_file():
        raise BrokerError(f"Kafka jar manifest {POM_PATH} is missing (run from a source checkout)")
    with file_lock(libs.parent / ".fetch.lock"):
        if jars_present(libs) and not force:
            return libs
        if libs.exists():
            shutil.rmtree(libs)
        cmd = [
            mvn, "-B", "-f", str(POM_PATH), "dependency:copy-dependencies",
            f"-Dkafka.version={version}", f"-Dkafka.libs.dir={libs}",
        ]
        if quiet:
            cmd.insert(1, "-q")
        if log4j2_version:
            cmd.append(f"-Dlog4j2.version={log4j2_version}")
        log.info("fetching kafka jars", version=version, into=str(libs))
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
            raise BrokerError(
                f"fetching Kafka {version} jars with Maven failed (exit {proc.returncode}):\n{tail}"
            )
        (libs / _COMPLETE_MARKER).write_text(f"{version}\n")
        log.info("kafka jars ready", version=version, seconds=round(time.monotonic() - started, 1))
    return libs
