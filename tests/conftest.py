"""Shared fixtures. The real Kafka broker's fixtures live here and only here.

``kafka_broker`` starts ONE real KRaft broker (jars from Maven Central, see
``consumers/broker/process.py``) per test session, with a PLAINTEXT and a SASL_SSL listener on
127.0.0.1. ``kafka_settings`` / ``kafka_sasl_settings`` give each test fresh topic names,
group id and transactional-id prefix, so tests never see each other's records.
Tests that use them are marked ``broker`` automatically.

``started_producer`` opens an aiokafka producer on given settings for one ``async with``.

``world`` is the monitor tests' shared test world (``tests/helpers/monitor_world.py``): a
catalog of synthetic works built with the untrained seed-1234 encoder, for the monitor core
(``tests/monitor/``) and the Kafka services (``tests/consumers/``).

``debian_music`` is the real recorded music the tests use: the Opus files of a Debian
package, fetched by ops/fetch-debian-media.sh. Nothing is skipped silently: if the music
cannot be fetched the tests that need it fail with the script's reason.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from streamcover.config import PROJECT_ROOT, KafkaSettings

if TYPE_CHECKING:
    from monitor_world import World

FETCH = PROJECT_ROOT / "ops" / "fetch-debian-media.sh"
MUSIC_PACKAGE = "warzone2100-music"  # GPL-2+ game soundtrack, Opus files, in Debian main

_BROKER_FIXTURES = {"kafka_broker", "kafka_settings", "kafka_sasl_settings", "restartable_broker"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def debian_music() -> list[Path]:
    """Opus files of the Debian package, fetched once into ~/.cache/streamcover/debian."""
    proc = subprocess.run(
        [str(FETCH), MUSIC_PACKAGE], capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{FETCH.name} {MUSIC_PACKAGE} failed (exit {proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    root = Path(proc.stdout.strip().splitlines()[-1])
    files = sorted(root.rglob("*.opus"))
    if len(files) < 10:
        pytest.fail(f"{MUSIC_PACKAGE} unpacked to {root} but holds only {len(files)} .opus files")
    return files


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Catalog of 4 synthetic works + a jingle, built with the untrained seed-1234 encoder."""
    from monitor_world import make_world

    return make_world(tmp_path_factory.mktemp("world"), KafkaSettings(), n_works=4, seconds=70)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Any]:
    """A real Apache Kafka broker (KRaft, broker+controller in one JVM) for the session."""
    from consumers.broker import KafkaBroker

    with KafkaBroker(sasl_ssl=True) as broker:
        yield broker


class RestartableBroker:
    """A broker of one test's own that can be restarted in place: same port, same data
    directory (so topics, committed offsets and transactions survive), same cluster id.

    Why a wrapper and not ``kafka_broker``: restarting the session's broker would disturb
    every other test. ``KafkaBroker`` keeps ``data_dir`` and a requested ``port`` across
    ``stop()``/``start()``, which is all a restart needs.
    """

    def __init__(self, data_dir: Path) -> None:
        from consumers.broker import KafkaBroker, free_port

        self.broker = KafkaBroker(port=free_port(), data_dir=data_dir)
        self.restarts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)

    def restart(self, down_s: float = 0.0) -> None:
        """SIGTERM the broker (controlled shutdown), stay down ``down_s``, start it again."""
        import time

        self.broker.stop()
        time.sleep(down_s)
        self.broker.start()
        self.restarts += 1


@pytest.fixture
def restartable_broker(tmp_path: Path) -> Iterator[RestartableBroker]:
    """A function-scoped broker (PLAINTEXT only) that the test may restart mid-stream with
    ``restartable_broker.restart()``; stopped at the end of the test."""
    rb = RestartableBroker(tmp_path / "kafka")
    rb.broker.start()
    try:
        yield rb
    finally:
        rb.broker.stop()


def _unique_names(request: pytest.FixtureRequest) -> dict[str, Any]:
    test = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40]
    tag = f"{test}-{uuid.uuid4().hex[:8]}"
    return {
        "audio_topic": f"test.{tag}.audio",
        "match_topic": f"test.{tag}.matches",
        "dead_letter_topic": f"test.{tag}.dead-letter",
        "state_topic": f"test.{tag}.state",
        "group_id": f"test-{tag}",
        "client_id": f"test-{tag}",
        "transactional_id_prefix": f"test-{tag}",
        "audio_partitions": 3,
        # Fail fast in tests instead of waiting the production 30 s.
        "request_timeout_ms": 15_000,
    }


@pytest.fixture
def kafka_settings(kafka_broker: Any, request: pytest.FixtureRequest) -> KafkaSettings:
    """``KafkaSettings`` for the PLAINTEXT listener with unique topics/group for this test.

    Topics are not created: call ``consumers.kafka.ensure_topics(kafka_settings)``.
    """
    settings: KafkaSettings = kafka_broker.client_settings(**_unique_names(request))
    return settings


@pytest.fixture
def kafka_sasl_settings(kafka_broker: Any, request: pytest.FixtureRequest) -> KafkaSettings:
    """Like ``kafka_settings`` but through SASL_SSL (SCRAM-SHA-512, the broker's test CA)."""
    settings: KafkaSettings = kafka_broker.client_settings(secure=True, **_unique_names(request))
    return settings


@pytest.fixture
def started_producer() -> Callable[..., contextlib.AbstractAsyncContextManager[Any]]:
    """``async with started_producer(settings, **overrides) as producer``: an
    ``AIOKafkaProducer`` with ``consumers.kafka.producer_kwargs(settings, **overrides)``
    (``transactional_id=...`` for a transactional one), started, and stopped on the way out."""

    @contextlib.asynccontextmanager
    async def started(settings: KafkaSettings, **overrides: Any) -> AsyncIterator[Any]:
        from aiokafka import AIOKafkaProducer

        from consumers.kafka import producer_kwargs

        producer = AIOKafkaProducer(**producer_kwargs(settings, **overrides))
        await producer.start()
        try:
            yield producer
        finally:
            await producer.stop()

    return started
