"""Helpers for the end-to-end tests: publish streams, read the match/dead-letter topics
(read_committed), run monitors in-process or as subprocesses. All against the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from consumers.monitor import Monitor
from consumers.producer import FramePublisher, kafka_producer
from streamcover.config import Settings
from streamcover.events import AudioFrame, DeadLetter, MatchEvent, SourceKind, decode, encode
from streamcover.monitor.engine import Engine, build_engine
from streamcover.monitor.pipeline import InRecord, Pipeline

ROOT = Path(__file__).resolve().parents[2]


async def publish(settings: Settings, sid: str, wave: np.ndarray, source: SourceKind,
                  speed: float | None = None, producer: Any = None) -> int:
    """Send one stream; ``speed`` = multiple of real time (None: as fast as possible)."""
    async with contextlib.AsyncExitStack() as stack:
        if producer is None:
            producer = await stack.enter_async_context(kafka_producer(settings))
        pub = FramePublisher(producer, settings, sid, source, settings.audio.wire_sample_rate)
        step = pub.frame_samples
        t0 = time.monotonic()
        for i in range(0, len(wave), step):
            await pub.push(wave[i : i + step])
            if speed:
                due = t0 + (i + step) / settings.audio.wire_sample_rate / speed
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        await pub.close()
        return pub.sent_frames


async def read_topic(settings: Settings, topic: str, stop: Callable[[list[Any]], bool],
                     timeout: float, kind: type[Any] = MatchEvent) -> list[Any]:
    """Everything committed on ``topic`` until ``stop(records)`` or ``timeout`` seconds."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from consumers.kafka import consumer_kwargs

    c = AIOKafkaConsumer(**consumer_kwargs(settings.kafka, group_id=None))
    await c.start()
    out: list[Any] = []
    try:
        parts = None
        deadline = time.monotonic() + timeout
        while parts is None and time.monotonic() < deadline:
            parts = c.partitions_for_topic(topic) or None
            if parts is None:
                await c._client.force_metadata_update()  # topic just created
                await asyncio.sleep(0.2)
        if parts is None:
            return out
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        while time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=300)
            for msgs in got.values():
                out.extend(decode(m.value, kind) for m in msgs)
            if stop(out):
                break
    finally:
        await c.stop()
    return out


def finals_for(streams: Sequence[str]) -> Callable[[list[MatchEvent]], bool]:
    """Stop once every stream has its end-of-stream event (final or setlist)."""
    want = set(streams)

    def done(events: list[MatchEvent]) -> bool:
        have = {e.stream_id for e in events if e.kind == "final" or
                (e.kind == "setlist" and e.event_id and e.source == "live")}
        return want <= have

    return done


@contextlib.asynccontextmanager
async def running_monitor(settings: Settings, engine: Engine | None = None) -> AsyncIterator[Monitor]:
    """An in-process monitor (its pipeline in a worker thread) until the block exits."""
    mon = Monitor(settings, engine or build_engine(settings))
    stop = asyncio.Event()
    await mon.start()
    task = asyncio.create_task(mon.run(stop))
    try:
        yield mon
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 60)
        finally:
            await mon.stop()


def spawn_monitor(env: dict[str, str], instance: str, log: Path) -> subprocess.Popen[bytes]:
    """``streamcover monitor`` as a real subprocess (for kill -9)."""
    full = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    fh = open(log, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "consumers", "--log-format", "json", "monitor", "--instance-id", instance],
        cwd=ROOT, env=full, stdout=fh, stderr=subprocess.STDOUT,
    )


async def wait_for_log(log: Path, needle: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until a subprocess's log contains ``needle`` (e.g. its partitions are assigned)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and needle in log.read_text(errors="replace"):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"monitor exited with {proc.returncode}: {log.read_text()[-3000:]}")
        await asyncio.sleep(0.5)
    raise AssertionError(f"{needle!r} not in {log} after {timeout} s: {log.read_text()[-3000:] if log.exists() else ''}")


def frames_of(settings: Settings, sid: str, wave: np.ndarray, source: SourceKind) -> list[bytes]:
    """The exact records ``publish`` sends (for the no-Kafka reference run)."""
    rate = settings.audio.wire_sample_rate
    step = max(1, round(settings.audio.frame_seconds * rate))
    out = []
    seq = 0
    for i in range(0, len(wave), step):
        chunk = wave[i : i + step]
        if len(chunk) < step:
            break
        out.append(encode(AudioFrame.from_samples(chunk, stream_id=sid, seq=seq, start_sample=i,
                                                  sample_rate=rate, source=source)))
        seq += 1
    rest = wave[seq * step :]
    out.append(encode(AudioFrame.from_samples(rest, stream_id=sid, seq=seq, start_sample=seq * step,
                                              sample_rate=rate, source=source, eos=True)))
    return out


def reference_events(settings: Settings, engine: Engine, streams: dict[str, tuple[np.ndarray, SourceKind]]) -> list[MatchEvent]:
    """What one monitor decides on these streams, computed without Kafka (the oracle for
    the crash and rebalance tests: same pipeline, no interruptions)."""
    pipe = Pipeline(settings, engine)
    recs = []
    for sid, (wave, source) in streams.items():
        for off, value in enumerate(frames_of(settings, sid, wave, source)):
            recs.append(InRecord("ref", 0, len(recs) + off * 0, sid.encode(), value, 0))
    recs = [InRecord(r.topic, r.partition, i, r.key, r.value, 0) for i, r in enumerate(recs)]
    return pipe.process(recs).events


def dead_letters(records: list[Any]) -> list[DeadLetter]:
    return [r for r in records if isinstance(r, DeadLetter)]
