"""`streamcover monitor`: the Kafka service around :class:`streamcover.monitor.pipeline.Pipeline`.

Loop: poll the audio topic (consumer group, read_committed) → run the pipeline on the batch
in a worker thread (features, batched encoder, search, decisions; the event loop never
blocks) → split the batch's output by input partition → for each partition, write its
events, dead letters, stream checkpoints, partition mark *and* its consumed offset in one
Kafka transaction of that partition's own transactional producer
(``send_offsets_to_transaction``). After a crash a partition is redone from its last
committed point, so a read_committed reader sees every event exactly once.

Fencing (docs/monitor.md "Fencing"): the transactional id belongs to the input partition,
not to the instance (``<prefix>-<audio topic>-<p>``), as in Kafka's classic exactly-once
scheme. The producer of a partition is created (``InitProducerId``) when the partition is
assigned and closed when it is revoked; whoever is assigned a partition next bumps the
id's epoch, which aborts a paused predecessor's open transaction and makes its later
commit fail (``ProducerFenced``). A second live instance with the same instance id is
refused at start (exit 78).

On assignment the partitions' producers are created first (so a predecessor's open
transaction is aborted), then their stream checkpoints are read from the compacted state
topic up to its end offsets (partition p of the state topic holds the streams of audio
partition p). A failed or slow load is retried, then the monitor stops (exit 74).
A failed transaction (broker restart, leader change) re-creates the partition's producer
and rewinds the partition to the broker's committed state; an unreachable broker is
retried with backoff for ``monitor.broker_retry_seconds`` (then exit 75).
SIGTERM/SIGINT: finish the current batch, commit, leave the group, exit 0.

This module: :class:`Monitor` (the group member: start, stop, the loop, the per-partition
commit, fencing, recovery and rebalance) and :func:`run_monitor`. Its parts, one module each:
``consumers.exit_codes`` (74/75/78, :class:`MonitorExit`), ``consumers.broker_retry``,
``consumers.duplicate_instance`` (exit 78 at start), ``consumers.partition_producers`` (the
transactional producers and their transactions), ``consumers.partition_routing`` (output by
partition), ``consumers.state_restore`` (checkpoints from the state topic),
``consumers.rebalance`` (the listener); the process entry point is ``consumers.monitor_main``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterable
from typing import Any

from consumers.broker_retry import backoff_delays, with_broker_retry
from consumers.duplicate_instance import (
    member_client_id,
    member_client_ids,
    refuse_duplicate,
    same_instance,
)
from consumers.exit_codes import (
    EXIT_BROKER,
    EXIT_DUPLICATE,
    EXIT_NO_MODEL,
    EXIT_OK,
    EXIT_STATE_LOAD,
    MonitorExit,
)
from consumers.kafka import consumer_kwargs, ensure_topics
from consumers.partition_producers import PartitionProducers, is_fenced
from consumers.partition_routing import keyed_partition, split_output
from consumers.rebalance import RebalanceListener
from consumers.state_restore import StateLoadError, load_state
from streamcover.config import Settings
from streamcover.log import get_logger
from streamcover.monitor.engine import Engine
from streamcover.monitor.metrics import Metrics
from streamcover.monitor.pipeline import InRecord, Output, Pipeline

# What callers and tests import from here (most of it defined in the modules named above).
__all__ = [
    "EXIT_BROKER",
    "EXIT_DUPLICATE",
    "EXIT_NO_MODEL",
    "EXIT_OK",
    "EXIT_STATE_LOAD",
    "Monitor",
    "MonitorExit",
    "StateLoadError",
    "backoff_delays",
    "keyed_partition",
    "load_state",
    "member_client_ids",
    "run_monitor",
    "same_instance",
    "split_output",
]

log = get_logger(__name__)


class Monitor:
    """One monitor instance: one consumer-group member, one transactional producer per
    assigned input partition."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics or Metrics()
        self.pipeline = Pipeline(settings, engine, self.metrics)
        self.lock = asyncio.Lock()
        self.consumer: Any = None
        self.transactions = PartitionProducers(settings.kafka)
        self.assigned: set[int] = set()
        self.batches = 0  # batches processed (each: one transaction per partition with output)
        self.transactions_committed = 0
        self.events_out = 0
        self.fenced = 0
        self.recovered = 0
        self.fatal: MonitorExit | None = None
        self._lost: set[int] = set()
        self._last_idle = time.monotonic()

    # ---- identity ------------------------------------------------------------------------------
    def transactional_id(self, partition: int) -> str:
        """The transactional id of input partition ``partition`` (shared by every instance)."""
        return self.transactions.transactional_id(partition)

    @property
    def member_client_id(self) -> str:
        """The consumer's client id: names the instance in the group (duplicate check)."""
        return member_client_id(self.settings)

    @property
    def producers(self) -> dict[int, Any]:
        """The transactional producer of each owned input partition."""
        return self.transactions.producers

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        k = self.settings.kafka
        await with_broker_retry(self.settings, "ensure_topics", lambda: ensure_topics(k))
        await refuse_duplicate(self.settings)

        async def connect() -> Any:
            consumer = AIOKafkaConsumer(**consumer_kwargs(
                k, client_id=self.member_client_id, max_poll_interval_ms=600_000))
            consumer.subscribe([k.audio_topic], listener=RebalanceListener(self))
            try:
                await consumer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
            return consumer

        self.consumer = await with_broker_retry(self.settings, "consumer_start", connect)
        log.info("monitor_started", instance_id=self.settings.monitor.instance_id, group=k.group_id,
                 transactional_ids=self.transactional_id(0).rsplit("-", 1)[0] + "-<partition>",
                 model_id=self.engine.model_id, trained=self.engine.trained)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.consumer is not None:
                await asyncio.wait_for(self.consumer.stop(), 30)
        await self.transactions.close(list(self.producers))
        log.info("monitor_stopped", batches=self.batches, transactions=self.transactions_committed,
                 events=self.events_out, fenced=self.fenced, recovered=self.recovered)

    # ---- the loop ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Process until ``stop`` is set; the batch in flight is always committed first.
        Raises :class:`MonitorExit` when the monitor cannot go on."""
        from aiokafka.errors import KafkaError

        k = self.settings.kafka
        wait_ms = max(1, int(min(self.settings.encoder.max_batch_wait_ms,
                                 self.settings.monitor.poll_timeout_ms)))
        poll_failing_since: float | None = None
        delays = backoff_delays()
        interval_s = self.settings.monitor.min_batch_interval_ms / 1000.0
        last_batch = -math.inf
        while not stop.is_set():
            if self.fatal is not None:
                raise self.fatal
            if self._lost:
                await self._recover()
                continue
            rest = last_batch + interval_s - time.monotonic()
            if rest > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), rest)
                continue
            try:
                polled = await self.consumer.getmany(timeout_ms=wait_ms, max_records=4000)
            except KafkaError as exc:
                now = time.monotonic()
                poll_failing_since = poll_failing_since or now
                if now - poll_failing_since > self.settings.monitor.broker_retry_seconds:
                    raise MonitorExit(EXIT_BROKER, f"polling {k.audio_topic} failed for "
                                      f"{now - poll_failing_since:.0f} s: {type(exc).__name__}: {exc}") from exc
                delay = next(delays)
                log.warning("poll_failed", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            poll_failing_since, delays = None, backoff_delays()
            records = [
                InRecord(tp.topic, tp.partition, m.offset, m.key, m.value or b"", m.timestamp)
                for tp, msgs in polled.items() for m in msgs
            ]
            idle_due = time.monotonic() - self._last_idle > min(5.0, self.settings.monitor.idle_evict_seconds / 2)
            if not records and not idle_due:
                continue
            async with self.lock:
                records = [r for r in records if r.partition in self.assigned and r.partition not in self._lost]
                if not records and not idle_due:
                    continue
                self._last_idle = last_batch = time.monotonic()
                self.batches += 1
                out = await asyncio.to_thread(self.pipeline.process, records)
                await self._commit(out)
            await self._update_lag(k.audio_topic)

    def _partition_of(self, stream_id: str, out: Output) -> int | None:
        for p, key, _value in out.states:
            if key == stream_id:
                return p
        rt = self.pipeline.streams.get(stream_id)
        if rt is not None:
            return int(rt.partition)
        restored = self.pipeline.restored.get(stream_id)
        return int(restored[0]) if restored is not None else None

    def _keyed_partition(self, stream_id: str) -> int:
        k = self.settings.kafka
        known = self.consumer.partitions_for_topic(k.audio_topic) if self.consumer is not None else None
        return keyed_partition(stream_id, sorted(known or range(k.audio_partitions)))

    async def _commit(self, out: Output) -> None:
        """One transaction per input partition with output; failures are handled per
        partition (fenced: given up; anything else: re-created and rewound)."""
        if not (out.events or out.dead_letters or out.states or out.offsets):
            return
        parts = split_output(out, lambda sid: self._partition_of(sid, out))
        stray = parts.pop(-1, None)
        if stray is not None:
            # A stream the pipeline no longer holds: its key's default-partitioner partition
            # (where every streamcover producer sends it) is the best evidence left.
            for ev in stray.events:
                p = self._keyed_partition(ev.stream_id)
                log.warning("event_partition_from_key", stream=ev.stream_id, partition=p)
                parts.setdefault(p, Output()).events.append(ev)
        unowned = sorted(p for p in parts if p not in self.producers or p not in self.assigned)
        if unowned:
            log.warning("output_for_unowned_partitions", partitions=unowned)
        owned = sorted(p for p in parts if p not in unowned)
        results = await asyncio.gather(*(self.transactions.commit(p, parts[p]) for p in owned),
                                       return_exceptions=True)
        for p, res in zip(owned, results, strict=True):
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, BaseException):
                if is_fenced(res):
                    await self._on_fenced(p, res)
                else:
                    log.warning("transaction_failed", partition=p, error=f"{type(res).__name__}: {res}")
                    self._lost.add(p)
                continue
            self.transactions_committed += 1
            self.events_out += len(parts[p].events)
            self.metrics.transactions.inc()
            for ev in parts[p].events:
                log.info("event", kind=ev.kind, stream=ev.stream_id, reference=ev.reference_id,
                         score=round(ev.score, 4), span=[ev.stream_span.start, ev.stream_span.end],
                         latency_ms=round(ev.latency_ms, 1), event_id=ev.event_id, partition=p)

    async def _update_lag(self, topic: str) -> None:
        from aiokafka import TopicPartition

        for p in list(self.assigned):
            tp = TopicPartition(topic, p)
            with contextlib.suppress(Exception):
                hw = self.consumer.highwater(tp)
                if hw is not None:
                    pos = await self.consumer.position(tp)
                    self.metrics.lag.labels(str(p)).set(max(0, hw - pos))

    # ---- fencing and recovery -----------------------------------------------------------------
    async def _on_fenced(self, partition: int, exc: BaseException) -> None:
        """Another instance owns ``partition`` now: forget it, stop fetching it and rejoin the
        group (its transaction was aborted by the new owner; nothing of it is visible)."""
        from aiokafka import TopicPartition

        self.fenced += 1
        log.warning("partition_fenced", partition=partition, transactional_id=self.transactional_id(partition),
                    error=type(exc).__name__)
        await self._release({partition})
        tp = TopicPartition(self.settings.kafka.audio_topic, partition)
        with contextlib.suppress(Exception):
            self.consumer.pause(tp)
        coordinator = getattr(self.consumer, "_coordinator", None)
        with contextlib.suppress(Exception):
            coordinator.request_rejoin()  # type: ignore[union-attr]

    async def _recover(self) -> None:
        """Re-create the producers of partitions whose transaction failed and rewind them to
        the broker's committed state (checkpoints and offsets), as a restart would."""
        from aiokafka import TopicPartition

        # One heartbeat first: if the failure came with a rebalance (this instance was paused
        # and lost the partition), the revocation arrives now and the partition is not
        # re-taken, which would fence its new owner.
        await asyncio.sleep(self.settings.kafka.heartbeat_interval_ms / 1000)
        async with self.lock:
            lost, self._lost = sorted(self._lost), set()
            k = self.settings.kafka
            for p in lost:
                tp = TopicPartition(k.audio_topic, p)
                await self._release({p})
                if tp not in self.consumer.assignment():
                    continue  # revoked meanwhile: the new owner redoes it
                with contextlib.suppress(Exception):
                    self.consumer.pause(tp)

                async def retake(p: int = p, tp: Any = tp) -> None:
                    try:
                        await self._take({p})
                        committed = await self.consumer.committed(tp)
                    except BaseException:
                        await self._release({p})
                        raise
                    if committed is None:
                        await self.consumer.seek_to_beginning(tp)
                    else:
                        self.consumer.seek(tp, committed)

                await with_broker_retry(self.settings, f"recover partition {p}", retake)
                self.consumer.resume(tp)
                self.assigned.add(p)
                self.recovered += 1
                log.info("partition_recovered", partition=p)

    async def _release(self, partitions: set[int]) -> None:
        self.pipeline.drop_partitions(partitions)
        self.assigned -= partitions
        await self.transactions.close(sorted(partitions))

    async def _take(self, partitions: set[int]) -> int:
        """Create the partitions' producers (fencing any previous owner and ending its open
        transaction), then load their checkpoints. Returns the number of states loaded."""
        await self.transactions.open(partitions)
        return await load_state(self.settings.kafka, partitions, self._load_one,
                                self.settings.monitor.state_load_timeout_s)

    def _load_one(self, partition: int, key: str, value: bytes | None) -> None:
        """One state record into the pipeline; an unreadable one is skipped with a warning
        (a corrupt checkpoint must not stop every future start: that stream starts afresh)."""
        try:
            self.pipeline.load_state(partition, key, value)
        except Exception as exc:
            log.warning("state_record_unreadable", partition=partition, key=key[:200],
                        error=f"{type(exc).__name__}: {str(exc)[:200]}")

    # ---- rebalance ---------------------------------------------------------------------------
    async def on_revoked(self, partitions: Iterable[int]) -> None:
        parts = set(partitions)
        async with self.lock:  # waits for the transaction in flight
            await self._release(parts)
            self._lost -= parts
        log.info("partitions_revoked", partitions=sorted(parts))

    async def on_assigned(self, partitions: Iterable[int]) -> None:
        """Take the partitions (producers, then checkpoints). Never raises: aiokafka would
        swallow it and the partitions' records would be dropped unprocessed; a load that
        keeps failing sets :attr:`fatal` instead, which stops the loop (exit 74)."""
        parts = set(partitions) - self.assigned
        if not parts:
            return
        m = self.settings.monitor
        async with self.lock:
            t0 = time.perf_counter()
            delays = backoff_delays(1.0, 10.0)
            for attempt in range(1, m.state_load_attempts + 1):
                try:
                    n = await asyncio.wait_for(self._take(parts), m.state_load_timeout_s + 30)
                except Exception as exc:
                    await self._release(parts)
                    error = f"{type(exc).__name__}: {exc}"
                    log.error("state_load_failed", partitions=sorted(parts), attempt=attempt,
                              attempts=m.state_load_attempts, error=error)
                    if attempt == m.state_load_attempts:
                        self.fatal = MonitorExit(EXIT_STATE_LOAD, (
                            f"could not load the checkpoints of partitions {sorted(parts)} from "
                            f"{self.settings.kafka.state_topic} after {attempt} attempts: {error}"))
                        return
                    await asyncio.sleep(next(delays))
                    continue
                self.assigned |= parts
                break
        log.info("partitions_assigned", partitions=sorted(parts), states=n,
                 seconds=round(time.perf_counter() - t0, 3))


async def run_monitor(settings: Settings, engine: Engine, stop: asyncio.Event,
                      metrics: Metrics | None = None) -> Monitor:
    """Start, run until ``stop``, stop cleanly; returns the (stopped) monitor.
    Raises :class:`MonitorExit` when it cannot go on."""
    mon = Monitor(settings, engine, metrics)
    try:
        await mon.start()
        await mon.run(stop)
    finally:
        await mon.stop()
    return mon
