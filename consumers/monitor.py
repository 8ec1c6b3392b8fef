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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from consumers.kafka import admin_kwargs, consumer_kwargs, ensure_topics, producer_kwargs
from streamcover.config import KafkaSettings, Settings, get_settings
from streamcover.events import encode, value_budget
from streamcover.log import get_logger
from streamcover.model.loading import EncoderMissingError
from streamcover.monitor.engine import Engine, build_engine
from streamcover.monitor.metrics import Metrics, serve
from streamcover.monitor.pipeline import InRecord, Output, Pipeline

log = get_logger(__name__)

T = TypeVar("T")

# Exit codes (docs/monitor.md "Broker faults"); sysexits.h names, so supervisors can tell
# a transient fault (restart) from a configuration error (do not restart in a loop).
EXIT_OK = 0
EXIT_STATE_LOAD = 74  # EX_IOERR: checkpoints of an assigned partition could not be read
EXIT_BROKER = 75  # EX_TEMPFAIL: broker unreachable past monitor.broker_retry_seconds
EXIT_DUPLICATE = 78  # EX_CONFIG: another live monitor already uses this instance id
EXIT_NO_MODEL = 78  # EX_CONFIG: no encoder weights at encoder.model_path


class MonitorExit(Exception):
    """The monitor must stop: ``code`` is the process exit status, ``message`` says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StateLoadError(RuntimeError):
    """The state partitions could not be read up to their end offsets."""


def backoff_delays(first: float = 0.5, cap: float = 10.0) -> Iterator[float]:
    """Exponential backoff delays: first, 2·first, … capped at ``cap`` (forever)."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


def split_output(out: Output, partition_of: Callable[[str], int | None]) -> dict[int, Output]:
    """Split one batch's output into one :class:`Output` per input partition.

    Why: each input partition commits in its own transaction (its own transactional id),
    so everything a partition's records caused must travel with that partition's offset.
    Events are placed by their stream (``partition_of``); ones whose stream is unknown are
    left out under the key -1 for the caller to report.
    """
    parts: dict[int, Output] = {}

    def at(p: int) -> Output:
        return parts.setdefault(p, Output())

    for ev in out.events:
        p = partition_of(ev.stream_id)
        at(-1 if p is None else p).events.append(ev)
    for dl in out.dead_letters:
        at(dl.partition).dead_letters.append(dl)
    for state in out.states:
        at(state[0]).states.append(state)
    for p, off in out.offsets.items():
        at(p).offsets[p] = off
    return parts


def member_client_ids(described: Iterable[Any]) -> list[str]:
    """Client ids of the members in DescribeGroups responses (any protocol version).

    A member is ``(member_id, [group_instance_id,] client_id, client_host, metadata,
    assignment)``: the client id is the third string field from the end of the strings
    before the two byte fields.
    """
    ids: list[str] = []
    for response in described:
        for group in getattr(response, "groups", []):
            members = next((f for f in group if isinstance(f, list)), [])
            for member in members:
                strings = [f for f in member if isinstance(f, str) or f is None]
                # (member_id, client_id, host) or (member_id, instance_id, client_id, host)
                if len(strings) >= 3 and isinstance(strings[-2], str):
                    ids.append(strings[-2])
    return ids


def keyed_partition(stream_id: str, partitions: list[int]) -> int:
    """The partition Kafka's default partitioner (murmur2 of the key) gives ``stream_id``."""
    from aiokafka.partitioner import DefaultPartitioner

    return int(DefaultPartitioner()(stream_id.encode(), partitions, partitions))


def same_instance(client_id: str, instance_id: str) -> bool:
    """Whether a group member's client id names monitor instance ``instance_id`` (whatever
    ``kafka.client_id`` that monitor was started with)."""
    return client_id.endswith(f"-monitor-{instance_id}")


def _is_fenced(exc: BaseException) -> bool:
    from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

    return isinstance(exc, (ProducerFenced, InvalidProducerEpoch)) or "fenced" in type(exc).__name__.lower()


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
        self.producers: dict[int, Any] = {}
        self.assigned: set[int] = set()
        self.batches = 0
        self.events_out = 0
        self.fenced = 0
        self.recovered = 0
        self.fatal: MonitorExit | None = None
        self._lost: set[int] = set()
        self._last_idle = time.monotonic()

    # ---- identity ------------------------------------------------------------------------------
    def transactional_id(self, partition: int) -> str:
        """The transactional id of input partition ``partition`` (shared by every instance)."""
        k = self.settings.kafka
        return f"{k.transactional_id_prefix}-{k.audio_topic}-{partition}"

    @property
    def member_client_id(self) -> str:
        """The consumer's client id: names the instance in the group (duplicate check)."""
        return f"{self.settings.kafka.client_id}-monitor-{self.settings.monitor.instance_id}"

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        k = self.settings.kafka
        await self._with_broker_retry("ensure_topics", lambda: ensure_topics(k))
        await self._refuse_duplicate()

        async def connect() -> Any:
            consumer = AIOKafkaConsumer(**consumer_kwargs(
                k, client_id=self.member_client_id, max_poll_interval_ms=600_000))
            consumer.subscribe([k.audio_topic], listener=_Listener(self))
            try:
                await consumer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
            return consumer

        self.consumer = await self._with_broker_retry("consumer_start", connect)
        log.info("monitor_started", instance_id=self.settings.monitor.instance_id, group=k.group_id,
                 transactional_ids=self.transactional_id(0).rsplit("-", 1)[0] + "-<partition>",
                 model_id=self.engine.model_id, trained=self.engine.trained)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.consumer is not None:
                await asyncio.wait_for(self.consumer.stop(), 30)
        await self._close_producers(list(self.producers))
        log.info("monitor_stopped", batches=self.batches, events=self.events_out,
                 fenced=self.fenced, recovered=self.recovered)

    async def _refuse_duplicate(self) -> None:
        """Exit 78 if a live member of the group already has this instance's client id.

        A member that died (kill -9) stays listed until its session times out, so a listed
        twin is waited for that long: a dead one disappears, a live one stays.
        """
        from aiokafka.admin import AIOKafkaAdminClient

        k = self.settings.kafka
        deadline = time.monotonic() + k.session_timeout_ms / 1000 + 3.0
        waited = False
        while True:
            async def describe() -> list[str]:
                admin = AIOKafkaAdminClient(**admin_kwargs(k))
                try:
                    await admin.start()
                    return member_client_ids(await admin.describe_consumer_groups([k.group_id]))
                finally:
                    await admin.close()

            members = await self._with_broker_retry("describe_group", describe)
            if not any(same_instance(c, self.settings.monitor.instance_id) for c in members):
                if waited:
                    log.info("instance_id_free", instance_id=self.settings.monitor.instance_id)
                return
            if time.monotonic() > deadline:
                raise MonitorExit(EXIT_DUPLICATE, (
                    f"another monitor with instance id {self.settings.monitor.instance_id!r} is "
                    f"live in consumer group {k.group_id!r}; give each running "
                    "instance its own --instance-id / STREAMCOVER_MONITOR__INSTANCE_ID"))
            if not waited:
                log.warning("instance_id_in_use_waiting", instance_id=self.settings.monitor.instance_id,
                            seconds=round(deadline - time.monotonic(), 1))
                waited = True
            await asyncio.sleep(1.0)

    async def _with_broker_retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` until it succeeds, backing off, for ``monitor.broker_retry_seconds``;
        then raise :class:`MonitorExit` (75). Each attempt is bounded by the request timeout."""
        limit = self.settings.monitor.broker_retry_seconds
        timeout = self.settings.kafka.request_timeout_ms / 1000 * 2 + 5
        deadline = time.monotonic() + limit
        for attempt, delay in enumerate(backoff_delays(), start=1):
            try:
                return await asyncio.wait_for(call(), timeout)
            except MonitorExit:
                raise
            except Exception as exc:  # broker errors of every kind are retried alike
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MonitorExit(EXIT_BROKER, (
                        f"{what}: the Kafka broker at {self.settings.kafka.bootstrap_servers} was "
                        f"not usable for {limit:.0f} s (last error: {type(exc).__name__}: {exc})")) from exc
                log.warning("broker_retry", what=what, attempt=attempt, error=f"{type(exc).__name__}: {exc}",
                            retry_in_s=round(min(delay, left), 2))
                await asyncio.sleep(min(delay, left))
        raise AssertionError("unreachable")

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
        while not stop.is_set():
            if self.fatal is not None:
                raise self.fatal
            if self._lost:
                await self._recover()
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
                self._last_idle = time.monotonic()
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
        results = await asyncio.gather(*(self._commit_partition(p, parts[p]) for p in owned),
                                       return_exceptions=True)
        for p, res in zip(owned, results, strict=True):
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, BaseException):
                if _is_fenced(res):
                    await self._on_fenced(p, res)
                else:
                    log.warning("transaction_failed", partition=p, error=f"{type(res).__name__}: {res}")
                    self._lost.add(p)
                continue
            self.batches += 1
            self.events_out += len(parts[p].events)
            self.metrics.transactions.inc()
            for ev in parts[p].events:
                log.info("event", kind=ev.kind, stream=ev.stream_id, reference=ev.reference_id,
                         score=round(ev.score, 4), span=[ev.stream_span.start, ev.stream_span.end],
                         latency_ms=round(ev.latency_ms, 1), event_id=ev.event_id, partition=p)

    async def _commit_partition(self, partition: int, out: Output) -> None:
        from aiokafka import TopicPartition

        k = self.settings.kafka
        producer = self.producers[partition]

        async def transact() -> None:
            async with producer.transaction():
                futures = []
                for ev in out.events:
                    ev_key = ev.stream_id.encode()
                    # shrunk (set list, metadata) to what the broker accepts: events.fit_event
                    ev_value = encode(ev, max_bytes=value_budget(k.max_message_bytes, ev_key))
                    futures.append(await producer.send(k.match_topic, key=ev_key, value=ev_value))
                for dl in out.dead_letters:
                    futures.append(await producer.send(k.dead_letter_topic, key=dl.key, value=encode(dl)))
                for p, key, value in out.states:
                    # value None is a tombstone: compaction deletes the key.
                    futures.append(await producer.send(k.state_topic, key=key.encode(), value=value,
                                                       partition=p))
                if futures:
                    await asyncio.gather(*futures)
                if partition in out.offsets:
                    await producer.send_offsets_to_transaction(
                        {TopicPartition(k.audio_topic, partition): out.offsets[partition]}, k.group_id)

        await asyncio.wait_for(transact(), k.request_timeout_ms / 1000 * 2 + 5)

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

                await self._with_broker_retry(f"recover partition {p}", retake)
                self.consumer.resume(tp)
                self.assigned.add(p)
                self.recovered += 1
                log.info("partition_recovered", partition=p)

    async def _release(self, partitions: set[int]) -> None:
        self.pipeline.drop_partitions(partitions)
        self.assigned -= partitions
        await self._close_producers(sorted(partitions))

    async def _close_producers(self, partitions: list[int]) -> None:
        producers = [self.producers.pop(p) for p in partitions if p in self.producers]

        async def close(producer: Any) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

        await asyncio.gather(*(close(pr) for pr in producers))

    async def _take(self, partitions: set[int]) -> int:
        """Create the partitions' producers (fencing any previous owner and ending its open
        transaction), then load their checkpoints. Returns the number of states loaded."""
        from aiokafka import AIOKafkaProducer

        k = self.settings.kafka

        async def producer_for(p: int) -> None:
            producer = AIOKafkaProducer(**producer_kwargs(k, transactional_id=self.transactional_id(p)))
            try:
                await producer.start()  # InitProducerId: bumps the epoch, aborts a zombie's txn
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 10)
                raise
            self.producers[p] = producer

        await asyncio.gather(*(producer_for(p) for p in sorted(partitions) if p not in self.producers))
        return await load_state(k, partitions, self._load_one, self.settings.monitor.state_load_timeout_s)

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


async def load_state(settings: KafkaSettings, partitions: set[int],
                     sink: Callable[[int, str, bytes | None], None], timeout_s: float) -> int:
    """Feed every committed record of the state ``partitions`` to ``sink`` in log order.

    Reads up to the end offsets taken at the start (read_committed: the last stable offset,
    so an open transaction of a predecessor must have been ended first). Raises
    :class:`StateLoadError` if those offsets are not reached within ``timeout_s``.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    if not partitions:
        return 0
    reader = AIOKafkaConsumer(**consumer_kwargs(settings, group_id=None, enable_auto_commit=False))
    await reader.start()
    count = 0
    try:
        tps = [TopicPartition(settings.state_topic, p) for p in sorted(partitions)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends: Mapping[Any, int] = await reader.end_offsets(tps)
        pending = {tp for tp in tps if ends.get(tp, 0) > 0}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise StateLoadError(
                    f"state partitions {sorted(tp.partition for tp in pending)} not read to their end "
                    f"offsets within {timeout_s:g} s")
            got = await reader.getmany(*pending, timeout_ms=200)
            for tp, msgs in got.items():
                for m in msgs:
                    if m.key is None:
                        continue
                    sink(tp.partition, m.key.decode(), m.value)
                    count += 1
            for tp in list(pending):
                # Control records (transaction markers) advance the position without records.
                if await reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await reader.stop()
    return count


def _listener_base() -> type:
    from aiokafka import ConsumerRebalanceListener

    return ConsumerRebalanceListener


class _Listener(_listener_base()):  # type: ignore[misc]
    """Rebalance callbacks: revocation waits for the transaction in flight; assignment
    takes the partitions before their records are processed."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.monitor.on_revoked(tp.partition for tp in revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.monitor.on_assigned(tp.partition for tp in assigned)


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


def _apply_args(settings: Settings, args: argparse.Namespace) -> Settings:
    mon = settings.monitor.model_copy(update={
        k: v for k, v in {
            "instance_id": getattr(args, "instance_id", None),
            "metrics_port": getattr(args, "metrics_port", None),
        }.items() if v is not None
    })
    update: dict[str, Any] = {"monitor": mon}
    if getattr(args, "catalog", None):
        update["catalog"] = settings.catalog.model_copy(update={"path": args.catalog})
    return settings.model_copy(update=update)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``streamcover monitor`` (``consumers/commands/monitor.py``).
    Returns 0 after SIGTERM/SIGINT, or one of the EXIT_* codes above."""
    settings = _apply_args(get_settings(), args)
    try:
        engine = build_engine(settings)
    except EncoderMissingError as exc:
        log.error("monitor_exit", code=EXIT_NO_MODEL, reason=str(exc))
        return EXIT_NO_MODEL
    metrics = Metrics()
    port = serve(metrics, settings.monitor.metrics_host, settings.monitor.metrics_port)
    log.info("metrics_endpoint", url=f"http://{settings.monitor.metrics_host}:{port}/metrics")

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_monitor(settings, engine, stop, metrics)

    try:
        asyncio.run(_main())
    except MonitorExit as exc:
        log.error("monitor_exit", code=exc.code, reason=exc.message)
        return exc.code
    return EXIT_OK
