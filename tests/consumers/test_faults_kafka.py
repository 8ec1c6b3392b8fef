"""Fault injection against the real broker: the monitor under kill -9, SIGSTOP, a broker
restart and a duplicate instance id (docs/monitor.md "Broker faults"). One file: the
scenarios share the restartable broker and the monitor-subprocess helpers.

Every scenario compares what a read_committed reader sees on the match topic with what
one uninterrupted pipeline decides on the same frames (``reference_events``, no Kafka):
the same event ids, each exactly once, so nothing is lost and nothing is duplicated.
Short session timeouts (6 s, the broker's minimum) keep the whole file to a few minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monitor_harness import (
    finals_for,
    publish,
    read_topic,
    reference_events,
    running_monitor,
    spawn_monitor,
    wait_for_log,
)
from monitor_world import World

from consumers.monitor import (
    EXIT_DUPLICATE,
    EXIT_STATE_LOAD,
    Monitor,
    MonitorExit,
    StateLoadError,
    backoff_delays,
    keyed_partition,
    load_state,
    member_client_ids,
    same_instance,
    split_output,
)
from streamcover.config import Settings
from streamcover.events import MatchEvent
from streamcover.monitor.engine import Engine, build_engine
from streamcover.monitor.pipeline import Output

FAULT_KAFKA: dict[str, int] = dict(session_timeout_ms=6_000, heartbeat_interval_ms=1_000, transaction_timeout_ms=30_000,
                   request_timeout_ms=10_000)
FAULT_MONITOR: dict[str, float] = dict(broker_retry_seconds=120.0, state_load_timeout_s=30.0)


def fault_settings(world: World, broker: Any, tag: str, instance: str = "0") -> Settings:
    t = f"{tag}-{uuid.uuid4().hex[:8]}"
    kafka = broker.client_settings(
        audio_topic=f"f.{t}.audio", match_topic=f"f.{t}.matches", dead_letter_topic=f"f.{t}.dlq",
        state_topic=f"f.{t}.state", group_id=f"g-{t}", client_id=f"c-{t}",
        transactional_id_prefix=f"tx-{t}", audio_partitions=3, **FAULT_KAFKA)
    monitor = world.settings.monitor.model_copy(update={"instance_id": instance, **FAULT_MONITOR})
    return world.settings.model_copy(update={"kafka": kafka, "monitor": monitor})


def with_instance(settings: Settings, instance: str) -> Settings:
    return settings.model_copy(update={"monitor": settings.monitor.model_copy(update={"instance_id": instance})})


def fault_env(world: World, settings: Settings) -> dict[str, str]:
    env = world.env(settings)
    for name, value in FAULT_KAFKA.items():
        env[f"STREAMCOVER_KAFKA__{name.upper()}"] = str(value)
    for name, seconds in FAULT_MONITOR.items():
        env[f"STREAMCOVER_MONITOR__{name.upper()}"] = str(seconds)
    return env


def streams_of(world: World) -> dict[str, tuple[np.ndarray, Any]]:
    """Two uploads and a short live set: several windows, updates, a set list."""
    hop = 22 * 10_240 / 22_050
    live = np.concatenate([world.copy_of(f"work-{i}", 3 * hop, noise_seed=i) for i in (3, 0)])
    return {
        "f-up": (world.copy_of("work-1", 41.0), "upload"),
        "f-up2": (world.copy_of("work-2", 35.0), "upload"),
        "f-live": (live, "live"),
    }


def scenario(world: World, broker: Any, tag: str, tmp_path: Path) -> tuple[Settings, dict[str, Any], Path]:
    """Fresh settings, the streams and the log path of a monitor subprocess."""
    return fault_settings(world, broker, tag), streams_of(world), tmp_path / "monitor.log"


async def streaming(settings: Settings, streams: dict[str, Any], log: Path,
                    proc: subprocess.Popen[bytes]) -> tuple[Any, list[MatchEvent]]:
    """Once the monitor subprocess has its partitions, send the streams at real time in the
    background (slow enough that a fault injected after the first events still lands
    mid-stream on a loaded machine, and that the SIGSTOP loop gets enough transactions to
    catch one open: at 1.5x it once ran out of stream under the full suite); return that
    task and the first two events."""
    await wait_for_log(log, "partitions_assigned", 240, proc)
    sending = asyncio.gather(*(publish(settings, sid, w, src, speed=1.0) for sid, (w, src) in streams.items()))
    first = await read_topic(settings, settings.kafka.match_topic, lambda ev: len(ev) >= 2, 180)
    return sending, first


@pytest.fixture(scope="module")
def engine(world: World) -> Engine:
    return build_engine(world.settings)


@pytest.fixture(scope="module")
def want(world: World, engine: Engine) -> list[MatchEvent]:
    """What one uninterrupted pipeline decides on these streams (the oracle)."""
    return reference_events(world.settings, engine, streams_of(world))


def assert_exactly_once(got: list[MatchEvent], want: list[MatchEvent], scenario: str = "") -> None:
    counts = Counter(e.event_id for e in got)
    dup = {i: n for i, n in counts.items() if n > 1}
    assert not dup, f"duplicated for a read_committed reader: {dup}"
    key = sorted((e.event_id, e.kind, e.reference_id) for e in want)
    have = sorted((e.event_id, e.kind, e.reference_id) for e in got)
    missing = sorted(set(key) - set(have))
    extra = sorted(set(have) - set(key))
    assert not missing and not extra, f"lost {missing}; unexpected {extra}"
    assert len(want) >= 6  # the oracle itself is not trivially empty
    print(f"SCENARIO {scenario}: events expected {len(want)}, seen {len(got)}, lost {len(missing)}, "
          f"duplicated {sum(n - 1 for n in counts.values())}")


class TxnProbe:
    """Tells whether a transaction is open on the state topic: records there that a
    read_uncommitted reader counts (high watermark) but read_committed does not (LSO)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.readers: list[Any] = []

    async def __aenter__(self) -> TxnProbe:
        from aiokafka import AIOKafkaConsumer

        from consumers.kafka import consumer_kwargs

        for level in ("read_committed", "read_uncommitted"):
            c = AIOKafkaConsumer(**consumer_kwargs(self.settings.kafka, group_id=None, isolation_level=level))
            await c.start()
            self.readers.append(c)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self.readers:
            await c.stop()

    async def open_partitions(self) -> list[int]:
        from aiokafka import TopicPartition

        k = self.settings.kafka
        tps = [TopicPartition(k.state_topic, p) for p in range(k.audio_partitions)]
        lso = await self.readers[0].end_offsets(tps)
        hw = await self.readers[1].end_offsets(tps)
        return [tp.partition for tp in tps if lso[tp] < hw[tp]]


async def stop_inside_transaction(proc: subprocess.Popen[bytes], probe: TxnProbe,
                                  others: set[int] | None = None, within_s: float = 150.0) -> list[int]:
    """SIGSTOP the monitor the moment the probe sees one of its transactions open, and keep
    it stopped if the transaction is still open once the broker had time to finish any
    commit already sent; otherwise let it go and watch again. Partitions in ``others``
    belong to a monitor that keeps running, so their transactions do not count.

    Watching first (a few ms per look) rather than stopping at random instants catches
    transactions that are open for only tens of milliseconds; random stops once missed
    all of them under the full suite."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    looks = stops = 0

    async def open_now() -> list[int]:
        return [p for p in await probe.open_partitions() if p not in (others or set())]

    while loop.time() < deadline and proc.poll() is None:
        looks += 1
        if not await open_now():
            await asyncio.sleep(0.003)
            continue
        os.kill(proc.pid, signal.SIGSTOP)
        stops += 1
        await asyncio.sleep(0.3)
        first, again = await open_now(), await open_now()
        if first and first == again:
            return first
        os.kill(proc.pid, signal.SIGCONT)
    raise AssertionError(f"never caught the monitor inside a transaction: {looks} looks, {stops} stops "
                         f"in {within_s:.0f} s, monitor exit status {proc.poll()}")


async def closed_soon(probe: TxnProbe, partitions: list[int], tries: int = 40) -> bool:
    """True once none of ``partitions`` has an open transaction (a running monitor's own
    transactions are open for moments only, so one of the looks sees them closed)."""
    for _ in range(tries):
        if not set(partitions) & set(await probe.open_partitions()):
            return True
        await asyncio.sleep(0.25)
    return False


def _finish(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@dataclass
class Caught:
    """A monitor subprocess caught (SIGSTOP) inside a transaction while its streams are sent."""

    settings: Settings
    streams: dict[str, Any]
    log: Path
    proc: subprocess.Popen[bytes]
    sending: Any  # the task still sending the streams
    first: list[MatchEvent]  # the first events, seen before the stop
    probe: TxnProbe
    open_partitions: list[int]  # state partitions with the transaction left open
    exit_code: int | None = None  # the subprocess's, once it is finished on the way out


@contextlib.asynccontextmanager
async def caught_inside_transaction(world: World, broker: Any, tag: str, instance: str,
                                    tmp_path: Path) -> AsyncIterator[Caught]:
    """Start monitor ``instance`` as a subprocess, stream to it and stop it inside a
    transaction; on the way out it is finished (SIGCONT, SIGTERM) and its status recorded."""
    settings, streams, log = scenario(world, broker, tag, tmp_path)
    proc = spawn_monitor(fault_env(world, settings), instance, log)
    caught: Caught | None = None
    try:
        sending, first = await streaming(settings, streams, log, proc)
        async with TxnProbe(settings) as probe:
            open_now = await stop_inside_transaction(proc, probe)
            caught = Caught(settings, streams, log, proc, sending, first, probe, open_now)
            yield caught
    finally:
        code = _finish(proc)
        if caught is not None:
            caught.exit_code = code


@pytest.mark.slow
async def test_kill9_with_an_open_transaction(world: World, kafka_broker: Any, engine: Engine,
                                              want: list[MatchEvent], tmp_path: Path) -> None:
    async with caught_inside_transaction(world, kafka_broker, "kill", "0", tmp_path) as killed:
        os.kill(killed.proc.pid, signal.SIGKILL)  # killed while stopped: the transaction stays open
        killed.proc.wait(30)
        assert await killed.probe.open_partitions() == killed.open_partitions
        finals = finals_for(list(killed.streams))
        assert not finals(killed.first), "the kill came too late to test anything"
        # The same instance id again: the dead member is waited out, not refused.
        async with running_monitor(killed.settings, engine) as mon:
            await killed.sending
            got = await read_topic(killed.settings, killed.settings.kafka.match_topic, finals, 240)
            assert await closed_soon(killed.probe, killed.open_partitions)  # the new owner aborted it
    assert mon.fatal is None and mon.metrics.restored._value.get() > 0
    assert killed.open_partitions
    print(f"SCENARIO kill9: open transactions on state partitions {killed.open_partitions} at the kill")
    assert_exactly_once(got, want, "kill9")


@pytest.mark.slow
async def test_paused_monitor_is_fenced(world: World, kafka_broker: Any, engine: Engine,
                                        want: list[MatchEvent], tmp_path: Path) -> None:
    async with caught_inside_transaction(world, kafka_broker, "pause", "a", tmp_path) as zombie:
        # Another instance joins; past the session timeout it takes every partition, and
        # its new producers abort the zombie's open transaction.
        async with running_monitor(with_instance(zombie.settings, "b"), engine) as other:
            for _ in range(120):
                if other.assigned == {0, 1, 2}:
                    break
                await asyncio.sleep(0.5)
            assert other.assigned == {0, 1, 2}
            assert await closed_soon(zombie.probe, zombie.open_partitions)
            zombie_log_before = zombie.log.read_text(errors="replace")
            os.kill(zombie.proc.pid, signal.SIGCONT)
            await wait_for_log(zombie.log, "partition_fenced", 60, zombie.proc)
            await zombie.sending
            got = await read_topic(zombie.settings, zombie.settings.kafka.match_topic,
                                   finals_for(list(zombie.streams)), 240)
        assert other.fenced == 0 and other.fatal is None
    assert zombie.exit_code == 0, zombie.log.read_text()[-3000:]
    assert "partition_fenced" not in zombie_log_before
    fenced = zombie.log.read_text(errors="replace").count('"partition_fenced"')
    print(f"SCENARIO paused: open at SIGSTOP {zombie.open_partitions}, zombie fenced on {fenced} partition(s)")
    assert_exactly_once(got, want, "paused")


@pytest.mark.slow
async def test_broker_restart_mid_stream(world: World, restartable_broker: Any, engine: Engine,
                                         want: list[MatchEvent]) -> None:
    settings = fault_settings(world, restartable_broker, "restart")
    streams = streams_of(world)
    # The test's own sender waits out the restart (a minute per request) instead of failing.
    patient = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"request_timeout_ms": 60_000})})
    async with running_monitor(settings, engine) as mon:
        sending = asyncio.gather(*(publish(patient, sid, w, src, speed=4.0) for sid, (w, src) in streams.items()))
        first = await read_topic(settings, settings.kafka.match_topic, lambda ev: len(ev) >= 2, 180)
        # First a partition's producer dies under the monitor (its next transaction fails,
        # not fenced): that partition is rewound to the committed state and carries on.
        live_partition = keyed_partition("f-live", [0, 1, 2])
        await mon.producers[live_partition].stop()
        # A transaction in flight when its producer stops may fail only at the commit's timeout
        # (2 x request_timeout_ms + 5 s = 25 s), and the rewind then reloads the partition's
        # checkpoints: on a loaded machine (the full suite) that once took over 30 s.
        for _ in range(360):
            if mon.recovered:
                break
            await asyncio.sleep(0.25)
        assert mon.recovered == 1 and live_partition in mon.assigned
        pid = restartable_broker.pid
        await asyncio.to_thread(restartable_broker.restart, 2.0)
        assert restartable_broker.pid != pid and restartable_broker.restarts == 1
        await sending
        got = await read_topic(settings, settings.kafka.match_topic, finals_for(list(streams)), 240)
        assert mon.fatal is None
    assert not finals_for(list(streams))(first), "the restart came too late to test anything"
    print(f"SCENARIO restart: events before the restart {len(first)}, partitions recovered "
          f"{mon.recovered}, transactions {mon.metrics.transactions._value.get():.0f}")
    assert_exactly_once(got, want, "restart")


@pytest.mark.slow
async def test_duplicate_instance_id_is_refused(world: World, kafka_broker: Any, engine: Engine,
                                                want: list[MatchEvent], tmp_path: Path) -> None:
    settings = fault_settings(world, kafka_broker, "dup", instance="twin")
    streams = streams_of(world)
    log = tmp_path / "twin.log"
    async with running_monitor(settings, engine) as live:
        sending = asyncio.gather(*(publish(settings, sid, w, src, speed=4.0) for sid, (w, src) in streams.items()))
        twin = spawn_monitor(fault_env(world, settings), "twin", log)
        try:
            code = await asyncio.to_thread(twin.wait, 240)
        finally:
            _finish(twin)
        await sending
        got = await read_topic(settings, settings.kafka.match_topic, finals_for(list(streams)), 240)
        assert live.assigned == {0, 1, 2} and live.fenced == 0
    text = log.read_text(errors="replace")
    assert code == EXIT_DUPLICATE, text[-3000:]
    assert "another monitor with instance id 'twin' is live" in text
    assert "partitions_assigned" not in text
    print(f"SCENARIO duplicate: second instance exited {code}")
    assert_exactly_once(got, want, "duplicate")


# ---- the pure parts and the state load, without a monitor process ---------------------------

def test_split_output_keeps_each_partition_with_its_own_offset(want: list[MatchEvent]) -> None:
    out = Output(events=list(want), states=[(2, "f-up", b"s"), (0, "__mark__:a:0", b"m")],
                 offsets={0: 5, 2: 9})
    home = {"f-up": 2, "f-up2": 0}
    parts = split_output(out, home.get)
    assert parts[2].offsets == {2: 9} and parts[0].offsets == {0: 5}
    assert {e.stream_id for e in parts[2].events} == {"f-up"}
    assert {e.stream_id for e in parts[0].events} == {"f-up2"}
    assert {e.stream_id for e in parts[-1].events} == {"f-live"}  # unknown: reported, not guessed
    assert parts[2].states == [(2, "f-up", b"s")]
    assert sum(len(p.events) for p in parts.values()) == len(want)


def test_backoff_and_instance_names() -> None:
    delays = backoff_delays(0.5, 4.0)
    assert [next(delays) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert same_instance("c-x-monitor-a", "a") and same_instance("other-monitor-a", "a")
    assert not same_instance("c-x-monitor-ab", "a") and not same_instance("c-x-monitor-a", "b")


async def test_describe_group_names_its_live_members(kafka_settings: Any) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    from consumers.kafka import admin_kwargs, consumer_kwargs, ensure_topics

    await ensure_topics(kafka_settings)
    c = AIOKafkaConsumer(**consumer_kwargs(kafka_settings, client_id="probe-monitor-7"))
    c.subscribe([kafka_settings.audio_topic])
    await c.start()
    admin = AIOKafkaAdminClient(**admin_kwargs(kafka_settings))
    try:
        await c.getmany(timeout_ms=3000)  # joins the group
        await admin.start()
        ids = member_client_ids(await admin.describe_consumer_groups([kafka_settings.group_id]))
    finally:
        await admin.close()
        await c.stop()
    assert ids == ["probe-monitor-7"]


async def test_keyed_partition_is_where_the_producer_puts_a_stream(kafka_settings: Any) -> None:
    from consumers.kafka import ensure_topics
    from consumers.producer import kafka_producer

    await ensure_topics(kafka_settings)
    settings = Settings(kafka=kafka_settings)
    placed = {}
    async with kafka_producer(settings) as producer:
        for sid in (f"stream-{i}" for i in range(12)):
            meta = await producer.send_and_wait(kafka_settings.audio_topic, key=sid.encode(), value=b"x")
            placed[sid] = meta.partition
    assert len(set(placed.values())) > 1
    assert {sid: keyed_partition(sid, [0, 1, 2]) for sid in placed} == placed


async def test_match_and_dead_letter_topics_get_max_message_bytes(kafka_settings: Any) -> None:
    from consumers.kafka import ensure_topics, topic_config

    settings = kafka_settings.model_copy(update={"max_message_bytes": 2_000_000})
    await ensure_topics(settings)
    for topic in (settings.match_topic, settings.dead_letter_topic, settings.audio_topic, settings.state_topic):
        assert (await topic_config(settings, topic))["max.message.bytes"] == "2000000", topic


async def _fill_state(settings: Any, n: int, size: int = 1) -> None:
    """``n`` checkpoints of ``size`` bytes on state partitions 0 and 1, in transactions."""
    from aiokafka import AIOKafkaProducer

    from consumers.kafka import ensure_topics, producer_kwargs

    await ensure_topics(settings)
    producer = AIOKafkaProducer(**producer_kwargs(settings, transactional_id=f"{settings.transactional_id_prefix}-fill"))
    await producer.start()
    try:
        for i in range(0, n, 100):  # many transactions: their markers end the log
            async with producer.transaction():
                for j in range(i, min(n, i + 100)):
                    await producer.send(settings.state_topic, key=f"s{j}".encode(), value=b"x" * size,
                                        partition=j % 2)
        async with producer.transaction():  # and a tombstone
            await producer.send(settings.state_topic, key=b"s0", value=None, partition=0)
        await producer.begin_transaction()  # an open transaction is not read (beyond the LSO)
        await producer.send_and_wait(settings.state_topic, key=b"open", value=b"y", partition=1)
    finally:
        with contextlib.suppress(Exception):
            await producer.abort_transaction()
        await producer.stop()


async def test_load_state_reads_to_the_end_offsets(kafka_settings: Any) -> None:
    await _fill_state(kafka_settings, 1000)
    seen: list[tuple[int, str, bytes | None]] = []
    n = await load_state(kafka_settings, {0, 1}, lambda p, k, v: seen.append((p, k, v)), 30)
    assert n == len(seen) == 1001
    assert seen[-1] == (0, "s0", None) or (0, "s0", None) in seen
    assert {k for _, k, _ in seen} == {f"s{j}" for j in range(1000)}


def _slow_state(settings: Any) -> Any:
    """1 MiB fetches (max_message_bytes) of 6 MB of checkpoints: several polls per load."""
    return settings.model_copy(update={"max_message_bytes": 1_048_576})


async def test_a_slow_state_load_is_an_error(kafka_settings: Any) -> None:
    settings = _slow_state(kafka_settings)
    await _fill_state(settings, 1500, size=4096)
    with pytest.raises(StateLoadError, match="not read to their end offsets"):
        await load_state(settings, {0, 1}, lambda p, k, v: None, 1e-6)
    assert await load_state(settings, {0, 1}, lambda p, k, v: None, 60) == 1501


async def test_a_state_load_that_keeps_failing_stops_the_monitor(world: World, kafka_broker: Any,
                                                                 engine: Engine) -> None:
    settings = fault_settings(world, kafka_broker, "load")
    settings = settings.model_copy(update={"kafka": _slow_state(settings.kafka), "monitor": settings.monitor.model_copy(
        update={"state_load_timeout_s": 1e-6, "state_load_attempts": 2})})
    await _fill_state(settings.kafka, 1500, size=4096)
    mon = Monitor(settings, engine)
    await mon.start()
    try:
        with pytest.raises(MonitorExit) as info:
            await asyncio.wait_for(mon.run(asyncio.Event()), 120)
    finally:
        await mon.stop()
    assert info.value.code == EXIT_STATE_LOAD
    assert "could not load the checkpoints of partitions" in info.value.message
    assert mon.assigned == set() and mon.transactions_committed == 0
