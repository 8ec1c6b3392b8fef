"""The real Kafka 4.x broker with aiokafka: round trips, transactions, topics, launcher.

These prove aiokafka issue #1085's claim (current aiokafka works with 4.x brokers, which
removed only old protocol versions) for everything streamcover relies on: idempotent
produce, consumer groups, read_committed, transactions and send_offsets_to_transaction.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumers.broker import DEFAULT_KAFKA_VERSION, BrokerError, KafkaBroker, free_port
from consumers.kafka import (
    TopicSetupError,
    TopicSpec,
    admin_kwargs,
    consumer_kwargs,
    ensure_topics,
    standard_topics,
    topic_config,
)
from streamcover.config import PROJECT_ROOT, KafkaSettings

TIMEOUT_S = 60.0

StartedProducer = Callable[..., AbstractAsyncContextManager[AIOKafkaProducer]]
"""The ``started_producer`` fixture (tests/conftest.py)."""


async def drain(
    settings: KafkaSettings,
    topic: str,
    *,
    isolation_level: str = "read_committed",
) -> list[ConsumerRecord[bytes, bytes]]:
    """Everything readable in ``topic`` up to its current end, without a consumer group.

    Reads until the position passes the end offset of every partition (for read_committed
    that is the last stable offset, so control records are skipped over as well).
    """
    admin = AIOKafkaAdminClient(**admin_kwargs(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["partitions"], f"topic {topic} has no partitions"
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(
        **consumer_kwargs(settings, group_id=None, isolation_level=isolation_level)
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(TIMEOUT_S):
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                batch = await consumer.getmany(*tps, timeout_ms=500)
                for records in batch.values():
                    out.extend(records)
        return out
    finally:
        await consumer.stop()


def values(records: Iterable[ConsumerRecord[bytes, bytes]]) -> list[bytes]:
    return [r.value for r in records if r.value is not None]


async def test_broker_is_real_kafka_4_on_loopback(kafka_broker: KafkaBroker) -> None:
    assert kafka_broker.poll() is None, "broker JVM not running"
    host, port = kafka_broker.bootstrap_servers.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    info = kafka_broker.cluster_info
    assert info is not None
    assert [(b["host"], b["port"]) for b in info["brokers"]] == [("127.0.0.1", int(port))]
    assert info["controller_id"] == 1
    # The JVM announces the version it actually runs (log4j2 via log4j-slf4j-impl works).
    log = kafka_broker.log_path.read_text()
    match = re.search(r"Kafka version: (\S+)", log)
    assert match, "broker log lacks the version line: logging is not wired"
    assert match.group(1) == DEFAULT_KAFKA_VERSION
    assert int(DEFAULT_KAFKA_VERSION.split(".")[0]) >= 4
    assert "Kafka Server started" in log


async def test_round_trip_keys_headers_and_partitioning(
    kafka_settings: KafkaSettings, started_producer: StartedProducer
) -> None:
    topic = kafka_settings.audio_topic
    assert await ensure_topics(kafka_settings, {topic: 3}) == [topic]
    sent: dict[bytes, list[bytes]] = {}
    partition_of: dict[bytes, set[int]] = {}
    async with started_producer(kafka_settings) as producer:
        for i in range(60):
            key = f"stream-{i % 5}".encode()
            value = f"frame-{i}".encode()
            meta = await producer.send_and_wait(
                topic, value, key=key, headers=[("seq", str(i).encode())]
            )
            sent.setdefault(key, []).append(value)
            partition_of.setdefault(key, set()).add(meta.partition)
    # A key always lands on one partition (a stream stays on one partition).
    assert all(len(p) == 1 for p in partition_of.values())
    assert len({next(iter(p)) for p in partition_of.values()}) > 1, "all keys on one partition"

    consumer = AIOKafkaConsumer(topic, **consumer_kwargs(kafka_settings))
    await consumer.start()
    got: dict[bytes, list[bytes]] = {}
    try:
        async with asyncio.timeout(TIMEOUT_S):
            n = 0
            while n < 60:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for r in records:
                        assert r.key is not None and r.value is not None
                        assert dict(r.headers)["seq"] == r.value.split(b"-")[1]
                        got.setdefault(r.key, []).append(r.value)
                        n += 1
        await consumer.commit()
    finally:
        await consumer.stop()
    assert got == sent  # every record once, in order per key

    # The group's committed offsets cover everything: a restarted member gets nothing new.
    admin = AIOKafkaAdminClient(**admin_kwargs(kafka_settings))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(kafka_settings.group_id)
    finally:
        await admin.close()
    assert sum(meta.offset for meta in committed.values()) == 60


async def test_large_record_round_trip(
    kafka_settings: KafkaSettings, started_producer: StartedProducer
) -> None:
    """Records above Kafka's 1 MiB default pass (frames up to 1 MiB plus DLQ envelope)."""
    topic = kafka_settings.dead_letter_topic
    await ensure_topics(kafka_settings, {topic: standard_topics(kafka_settings)[topic]})
    payload = os.urandom(3 * 1024 * 1024)
    async with started_producer(kafka_settings) as producer:
        await producer.send_and_wait(topic, payload, key=b"big")
    assert values(await drain(kafka_settings, topic)) == [payload]


async def test_transactions_commit_visible_abort_hidden(
    kafka_settings: KafkaSettings, started_producer: StartedProducer
) -> None:
    topic = kafka_settings.match_topic
    await ensure_topics(kafka_settings, {topic: 2})
    txn_id = f"{kafka_settings.transactional_id_prefix}-0"
    async with started_producer(kafka_settings, transactional_id=txn_id) as producer:
        async with producer.transaction():
            for i in range(5):
                await producer.send(topic, f"committed-{i}".encode(), key=f"k{i}".encode())
        await producer.begin_transaction()
        for i in range(5):
            await producer.send(topic, f"aborted-{i}".encode(), key=f"k{i}".encode())
        await producer.flush()  # the aborted records really reach the log
        await producer.abort_transaction()
        async with producer.transaction():
            for i in range(5, 8):
                await producer.send(topic, f"committed-{i}".encode(), key=f"k{i}".encode())

    committed = sorted(values(await drain(kafka_settings, topic)))
    assert committed == sorted(f"committed-{i}".encode() for i in range(8))
    everything = sorted(
        values(await drain(kafka_settings, topic, isolation_level="read_uncommitted"))
    )
    assert everything == sorted(
        [f"committed-{i}".encode() for i in range(8)] + [f"aborted-{i}".encode() for i in range(5)]
    )


async def test_open_transaction_is_invisible_until_commit(
    kafka_settings: KafkaSettings, started_producer: StartedProducer
) -> None:
    topic = kafka_settings.match_topic
    await ensure_topics(kafka_settings, {topic: 1})
    txn_id = f"{kafka_settings.transactional_id_prefix}-open"
    async with started_producer(kafka_settings, transactional_id=txn_id) as producer:
        await producer.begin_transaction()
        await producer.send(topic, b"pending", key=b"k")
        await producer.flush()
        assert values(await drain(kafka_settings, topic)) == []
        assert values(await drain(kafka_settings, topic, isolation_level="read_uncommitted")) == [
            b"pending"
        ]
        await producer.commit_transaction()
    assert values(await drain(kafka_settings, topic)) == [b"pending"]


async def _process_in_transaction(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    settings: KafkaSettings,
    tp: TopicPartition,
    count: int,
    *,
    commit: bool,
) -> list[int]:
    """Read ``count`` inputs, write transformed outputs + input offsets in one transaction."""
    records: list[ConsumerRecord[bytes, bytes]] = []
    async with asyncio.timeout(TIMEOUT_S):
        while len(records) < count:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=count - len(records))
            records.extend(batch.get(tp, []))
    await producer.begin_transaction()
    for r in records:
        assert r.value is not None
        await producer.send(settings.match_topic, r.value.upper(), key=r.key)
    await producer.send_offsets_to_transaction(
        {tp: records[-1].offset + 1}, settings.group_id
    )
    if commit:
        await producer.commit_transaction()
    else:
        await producer.flush()
        await producer.abort_transaction()
    return [r.offset for r in records]


async def _committed_once(settings: KafkaSettings, tp: TopicPartition) -> int | None:
    admin = AIOKafkaAdminClient(**admin_kwargs(settings))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.group_id)
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return None if meta is None or meta.offset < 0 else int(meta.offset)


async def _committed(settings: KafkaSettings, tp: TopicPartition, expect: int | None = None,
                     timeout: float = 10.0) -> int | None:
    """The group's committed offset. With ``expect``: polled until it is that or ``timeout``
    passes, because EndTxn returns before the coordinator has written the commit markers
    that make transactional offsets visible to an offset fetch."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await _committed_once(settings, tp)
        if expect is None or got == expect or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.1)


async def test_consume_transform_produce_commits_input_offsets_atomically(
    kafka_settings: KafkaSettings, started_producer: StartedProducer
) -> None:
    s = kafka_settings
    await ensure_topics(s, {s.audio_topic: 1, s.match_topic: 1})
    tp = TopicPartition(s.audio_topic, 0)
    async with started_producer(s) as plain:
        for i in range(10):
            await plain.send(s.audio_topic, f"in-{i}".encode(), key=b"stream")
        await plain.flush()

    async with started_producer(s, transactional_id=f"{s.transactional_id_prefix}-p0") as producer:
        consumer = AIOKafkaConsumer(**consumer_kwargs(s))
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            done = await _process_in_transaction(consumer, producer, s, tp, 6, commit=True)
            assert done == list(range(6))
            assert await _committed(s, tp, expect=6) == 6
            # The next four are processed, then the transaction aborts ("crash" before commit):
            # neither their outputs nor their input offsets may become visible.
            await _process_in_transaction(consumer, producer, s, tp, 4, commit=False)
            assert await _committed(s, tp) == 6
        finally:
            await consumer.stop()

        # A restarted worker resumes from the transactionally committed offset.
        consumer = AIOKafkaConsumer(**consumer_kwargs(s))
        await consumer.start()
        try:
            consumer.assign([tp])
            position = await consumer.position(tp)
            assert position == 6
            done = await _process_in_transaction(consumer, producer, s, tp, 4, commit=True)
            assert done == [6, 7, 8, 9]
            assert await _committed(s, tp, expect=10) == 10
        finally:
            await consumer.stop()

    outputs = values(await drain(s, s.match_topic))
    assert outputs == [f"IN-{i}".encode() for i in range(10)]  # each exactly once, in order
    raw = values(await drain(s, s.match_topic, isolation_level="read_uncommitted"))
    assert len(raw) == 14  # the aborted four are in the log, just never visible


async def test_ensure_topics_idempotent_and_state_topic_compacted(
    kafka_settings: KafkaSettings,
) -> None:
    s = kafka_settings
    created = await ensure_topics(s)
    assert sorted(created) == sorted([s.audio_topic, s.match_topic, s.dead_letter_topic,
                                      s.state_topic])
    assert await ensure_topics(s) == []  # second call: nothing to do, no error
    assert (await topic_config(s, s.state_topic))["cleanup.policy"] == "compact"
    assert (await topic_config(s, s.audio_topic))["cleanup.policy"] == "delete"

    admin = AIOKafkaAdminClient(**admin_kwargs(s))
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics([s.audio_topic])}
    finally:
        await admin.close()
    assert len(described[s.audio_topic]["partitions"]) == s.audio_partitions

    # An existing non-compacted topic cannot serve as the state topic.
    wrong = f"{s.state_topic}.wrong"
    await ensure_topics(s, {wrong: 1})
    with pytest.raises(TopicSetupError, match=r"cleanup\.policy"):
        await ensure_topics(s, {wrong: TopicSpec(1, {"cleanup.policy": "compact"})})
    # Fewer partitions than needed is an error too, naming the topic.
    with pytest.raises(TopicSetupError, match=re.escape(wrong)):
        await ensure_topics(s, {wrong: 4})
    # A broker-side rejection names the topic and the reason.
    with pytest.raises(TopicSetupError, match="bad-config"):
        await ensure_topics(s, {f"{s.state_topic}.bad-config": TopicSpec(1, {"cleanup.policy": "nope"})})


@pytest.mark.slow
def test_cli_run_prints_bootstrap_and_stops_on_sigterm(tmp_path: Path) -> None:
    """``streamcover broker run`` on a free port; SIGTERM shuts the JVM down cleanly."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumers", "broker", "run", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(lines)
        assert f"STREAMCOVER_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:{port}" in text, (
            text + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        )
        log_dir = Path(re.search(r"\(log: (.+)/broker\.log\)", text).group(1))  # type: ignore[union-attr]
        assert log_dir.is_dir()

        settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
        from consumers.broker.probe import probe_cluster

        info: dict[str, Any] = asyncio.run(probe_cluster(settings, timeout_s=10))
        assert info["brokers"][0]["port"] == port

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert proc.stdout.read().strip().endswith("kafka broker stopped")
        assert not log_dir.exists(), "temporary broker directory left behind"
        import socket

        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, "broker still listening"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_startup_failure_names_the_problem_with_log_tail() -> None:
    """A broker that dies during startup gives an error carrying its own log tail."""
    broker = KafkaBroker(
        sasl_ssl=True,
        startup_timeout_s=120,
        extra_properties={"ssl.keystore.location": "/nonexistent/streamcover-keystore.pem"},
    )
    with pytest.raises(BrokerError) as info:
        broker.start()
    message = str(info.value)
    assert "/nonexistent/streamcover-keystore.pem" in message
    assert broker.poll() is None and broker.pid is None  # nothing left running


def test_port_in_use_is_reported_before_launch() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port}.*in use"):
            KafkaBroker(port=port).start()
