"""`streamcover monitor`: the Kafka service around :class:`consumers.pipeline.Pipeline`.

Loop: poll the audio topic (consumer group, read_committed) → run the pipeline on the batch
in a worker thread (features, batched encoder, search, decisions; the event loop never
blocks) → write events, dead letters, stream checkpoints, partition marks *and* the consumed
offsets in one Kafka transaction (``send_offsets_to_transaction``). Either all of a batch's
effects become visible or none do, so after a crash the batch is redone from the last
committed point and a read_committed reader sees every event exactly once.

On partition assignment (start, rebalance, restart) the stream checkpoints of those
partitions are read back from the compacted state topic (partition p of the state topic
holds the streams of audio partition p). A revocation waits for the in-flight transaction.
SIGTERM/SIGINT: finish the current batch, commit, leave the group, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections.abc import Iterable
from typing import Any

from consumers.engine import Engine, build_engine
from consumers.kafka import consumer_kwargs, ensure_topics, producer_kwargs
from consumers.metrics import Metrics, serve
from consumers.pipeline import InRecord, Output, Pipeline
from streamcover.config import Settings, get_settings
from streamcover.events import encode
from streamcover.log import get_logger

log = get_logger("streamcover.monitor")


class Monitor:
    """One monitor instance (one transactional id, one member of the consumer group)."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics or Metrics()
        self.pipeline = Pipeline(settings, engine, self.metrics)
        self.lock = asyncio.Lock()
        self.consumer: Any = None
        self.producer: Any = None
        self.assigned: set[int] = set()
        self.batches = 0
        self.events_out = 0
        self._last_idle = time.monotonic()

    @property
    def transactional_id(self) -> str:
        k = self.settings.kafka
        return f"{k.transactional_id_prefix}-{self.settings.monitor.instance_id}"

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        k = self.settings.kafka
        await ensure_topics(k)
        self.producer = AIOKafkaProducer(**producer_kwargs(k, transactional_id=self.transactional_id))
        await self.producer.start()  # init_transactions: fences a previous incarnation
        self.consumer = AIOKafkaConsumer(**consumer_kwargs(k, max_poll_interval_ms=600_000))
        self.consumer.subscribe([k.audio_topic], listener=_Listener(self))
        await self.consumer.start()
        log.info("monitor_started", transactional_id=self.transactional_id, group=k.group_id,
                 model_id=self.engine.model_id, trained=self.engine.trained)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.consumer is not None:
                await self.consumer.stop()
        with contextlib.suppress(Exception):
            if self.producer is not None:
                await self.producer.stop()
        log.info("monitor_stopped", batches=self.batches, events=self.events_out)

    async def run(self, stop: asyncio.Event) -> None:
        """Process until ``stop`` is set; the batch in flight is always committed first."""
        k = self.settings.kafka
        wait_ms = max(1, int(min(self.settings.encoder.max_batch_wait_ms,
                                 self.settings.monitor.poll_timeout_ms)))
        while not stop.is_set():
            polled = await self.consumer.getmany(timeout_ms=wait_ms, max_records=4000)
            records = [
                InRecord(tp.topic, tp.partition, m.offset, m.key, m.value or b"", m.timestamp)
                for tp, msgs in polled.items() for m in msgs
            ]
            idle_due = time.monotonic() - self._last_idle > min(5.0, self.settings.monitor.idle_evict_seconds / 2)
            if not records and not idle_due:
                continue
            async with self.lock:
                records = [r for r in records if r.partition in self.assigned]
                if not records and not idle_due:
                    continue
                self._last_idle = time.monotonic()
                out = await asyncio.to_thread(self.pipeline.process, records)
                await self._commit(out)
            await self._update_lag(k.audio_topic)

    async def _commit(self, out: Output) -> None:
        from aiokafka import TopicPartition

        k = self.settings.kafka
        if not (out.events or out.dead_letters or out.states or out.offsets):
            return
        async with self.producer.transaction():
            futures = []
            for ev in out.events:
                futures.append(await self.producer.send(k.match_topic, key=ev.stream_id.encode(), value=encode(ev)))
            for dl in out.dead_letters:
                futures.append(await self.producer.send(k.dead_letter_topic, key=dl.key, value=encode(dl)))
            for partition, key, value in out.states:
                futures.append(await self.producer.send(k.state_topic, key=key.encode(), value=value,
                                                        partition=partition))
            if futures:
                await asyncio.gather(*futures)
            offsets = {TopicPartition(k.audio_topic, p): off for p, off in out.offsets.items()
                       if p in self.assigned}
            if offsets:
                await self.producer.send_offsets_to_transaction(offsets, k.group_id)
        self.batches += 1
        self.events_out += len(out.events)
        self.metrics.transactions.inc()
        for ev in out.events:
            log.info("event", kind=ev.kind, stream=ev.stream_id, reference=ev.reference_id,
                     score=round(ev.score, 4), span=[ev.stream_span.start, ev.stream_span.end],
                     latency_ms=round(ev.latency_ms, 1), event_id=ev.event_id)

    async def _update_lag(self, topic: str) -> None:
        from aiokafka import TopicPartition

        for p in list(self.assigned):
            tp = TopicPartition(topic, p)
            with contextlib.suppress(Exception):
                hw = self.consumer.highwater(tp)
                if hw is not None:
                    pos = await self.consumer.position(tp)
                    self.metrics.lag.labels(str(p)).set(max(0, hw - pos))

    # ---- rebalance ---------------------------------------------------------------------------
    async def on_revoked(self, partitions: Iterable[int]) -> None:
        parts = set(partitions)
        async with self.lock:  # waits for the transaction in flight
            self.pipeline.drop_partitions(parts)
            self.assigned -= parts
        log.info("partitions_revoked", partitions=sorted(parts))

    async def on_assigned(self, partitions: Iterable[int]) -> None:
        parts = set(partitions) - self.assigned
        async with self.lock:
            t0 = time.perf_counter()
            n = await self._load_state(parts)
            self.assigned |= parts
        log.info("partitions_assigned", partitions=sorted(parts), states=n,
                 seconds=round(time.perf_counter() - t0, 3))

    async def _load_state(self, partitions: set[int]) -> int:
        """Read the committed checkpoints of ``partitions`` from the compacted state topic."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if not partitions:
            return 0
        k = self.settings.kafka
        reader = AIOKafkaConsumer(**consumer_kwargs(k, group_id=None, enable_auto_commit=False))
        await reader.start()
        count = 0
        try:
            tps = [TopicPartition(k.state_topic, p) for p in sorted(partitions)]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await reader.end_offsets(tps)
            pending = {tp for tp in tps if ends.get(tp, 0) > 0}
            idle = 0
            deadline = time.monotonic() + 30.0
            while pending and time.monotonic() < deadline:
                got = await reader.getmany(*pending, timeout_ms=200)
                for tp, msgs in got.items():
                    for m in msgs:
                        if m.key is None:
                            continue
                        self.pipeline.load_state(tp.partition, m.key.decode(), m.value)
                        count += 1
                for tp in list(pending):
                    if await reader.position(tp) >= ends[tp]:
                        pending.discard(tp)
                idle = 0 if got else idle + 1
                if idle >= 3:
                    # Transaction markers (control records) at the log end are never returned,
                    # so the position can stop just short of the end offset: nothing is left.
                    pending.clear()
            if pending:
                log.warning("state_load_incomplete", partitions=sorted(tp.partition for tp in pending))
        finally:
            await reader.stop()
        return count


def _listener_base() -> type:
    from aiokafka import ConsumerRebalanceListener

    return ConsumerRebalanceListener


class _Listener(_listener_base()):  # type: ignore[misc]
    """Rebalance callbacks: revocation waits for the transaction in flight; assignment
    restores the partitions' stream checkpoints before their records are processed."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.monitor.on_revoked(tp.partition for tp in revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.monitor.on_assigned(tp.partition for tp in assigned)


async def run_monitor(settings: Settings, engine: Engine, stop: asyncio.Event,
                      metrics: Metrics | None = None) -> Monitor:
    """Start, run until ``stop``, stop cleanly; returns the (stopped) monitor."""
    mon = Monitor(settings, engine, metrics)
    await mon.start()
    try:
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
    """Entry point of ``streamcover monitor`` (via streamcover.commands.services)."""
    settings = _apply_args(get_settings(), args)
    engine = build_engine(settings)
    metrics = Metrics()
    port = serve(metrics, settings.monitor.metrics_host, settings.monitor.metrics_port)
    log.info("metrics_endpoint", url=f"http://{settings.monitor.metrics_host}:{port}/metrics")

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_monitor(settings, engine, stop, metrics)

    asyncio.run(_main())
    return 0
