"""Hostile input against the real broker and the real ``streamcover monitor`` process.

One monitor subprocess serves the whole module (one start-up, which is itself a scenario:
10,000 finished checkpoints and one orphaned checkpoint are on the state topic before it
starts). Then, in order: the orphan's partition gets traffic, the issue's probe, the
hand-made poison frames and a few hundred hypothesis-generated frames and garbage records.
After each, the monitor must still run, the hostile records are dead-lettered exactly once,
and the normal uploads sent behind them get exactly the events that one uninterrupted
pipeline decides on their frames (``reference_events``) — none lost, none duplicated — for
a read_committed reader. RSS is read from /proc (docs/monitor.md "Fault tolerance").
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import pytest_asyncio
from monitor_harness import (
    finals_for,
    frames_of,
    publish,
    read_topic,
    reference_events,
    spawn_monitor,
    wait_for_log,
)
from monitor_world import WIRE_RATE, World

from consumers.kafka import admin_kwargs, consumer_kwargs, ensure_topics
from consumers.producer import kafka_producer
from streamcover.config import Settings
from streamcover.events import (
    AudioFrame,
    DeadLetter,
    MatchEvent,
    StreamState,
    WireError,
    decode_any,
    encode,
)
from streamcover.monitor.engine import Engine, build_engine
from streamcover.monitor.pipeline import InRecord, Pipeline

pytestmark = pytest.mark.slow

FINISHED = 10_000
PARTITIONS = 3


def _partition(key: str) -> int:
    from aiokafka.partitioner import DefaultPartitioner

    parts = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key.encode(), parts, parts))


def _key_on(partition: int, prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(1000) if _partition(f"{prefix}-{i}") == partition)


def _rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _states_of(settings: Settings, engine: Engine, world: World) -> tuple[bytes, bytes]:
    """A real finished checkpoint (a 25 s upload) and a real unfinished one (no eos yet)."""
    done = frames_of(settings, "done", world.copy_of("work-1", 25.0), "upload")
    out = Pipeline(settings, engine).process([InRecord("a", 0, i, b"done", v, 0) for i, v in enumerate(done)])
    [finished] = [v for _, k, v in out.states if k == "done" and v is not None]
    part = frames_of(settings, "orph", world.copy_of("work-2", 40.0), "upload")[:50]
    out = Pipeline(settings, engine).process([InRecord("a", 0, i, b"orph", v, 0) for i, v in enumerate(part)])
    [open_] = [v for _, k, v in out.states if k == "orph" and v is not None]
    return finished, open_


async def _read_raw(settings: Settings, topic: str, stop: Callable[[dict[bytes, bytes | None]], bool],
                    timeout: float) -> dict[bytes, bytes | None]:
    """Latest value per key of a (state) topic as a read_committed reader sees it; None
    values are tombstones."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(**consumer_kwargs(settings.kafka, group_id=None))
    await c.start()
    latest: dict[bytes, bytes | None] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stop(latest):
            for msgs in (await c.getmany(timeout_ms=300)).values():
                latest.update((m.key, m.value) for m in msgs)
    finally:
        await c.stop()
    return latest


async def _committed(settings: Settings) -> dict[int, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**admin_kwargs(settings.kafka))
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(settings.kafka.group_id)
    finally:
        await admin.close()
    return {tp.partition: om.offset for tp, om in got.items() if tp.topic == settings.kafka.audio_topic}


def _ids(events: list[MatchEvent], sid: str) -> list[tuple[str, str, str | None]]:
    return sorted((e.event_id, e.kind, e.reference_id) for e in events if e.stream_id == sid)


def _raw(sid: str, seq: int, start: int, payload: bytes, **kw: Any) -> bytes:
    rec: dict[str, Any] = dict(v=1, type="audio", stream_id=sid, seq=seq, start_sample=start, sent_at=0.0,
                               sample_rate=WIRE_RATE, channels=1, sample_format="int16", source="upload",
                               eos=False, payload=payload, title=None)
    rec.update(kw)
    return msgpack.packb(rec, use_bin_type=True)


def _frame(sid: str, seq: int, start: int, n: int = 11_025, **kw: Any) -> AudioFrame:
    wave = np.sin(np.arange(n) * 0.05).astype(np.float32) * 0.3
    return AudioFrame.from_samples(wave, stream_id=sid, seq=seq, start_sample=start, sample_rate=kw.pop("rate", WIRE_RATE),
                                   source="upload", **kw)


class Run:
    """The monitor process, its settings and what the module has seen so far."""

    def __init__(self, world: World, settings: Settings, engine: Engine, proc: Any, log: Path) -> None:
        self.world = world
        self.settings = settings
        self.engine = engine
        self.proc = proc
        self.log = log
        self.startup_s = 0.0
        self.rss_after_start = (0.0, 0.0)
        self.orphan_final: list[tuple[str, str, str | None]] = []

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def send(self, records: Sequence[tuple[bytes | None, bytes]]) -> list[tuple[int, int]]:
        """Publish raw records; returns their (partition, offset)."""
        async with kafka_producer(self.settings) as prod:
            futs = [await prod.send(self.settings.kafka.audio_topic, key=k, value=v) for k, v in records]
            metas = await asyncio.gather(*futs)
        return [(m.partition, m.offset) for m in metas]

    async def upload(self, sid: str, seconds: float, work: str = "work-1") -> list[MatchEvent]:
        """A normal upload behind the hostile records: its events, exactly as decided
        without Kafka (nothing lost, nothing duplicated)."""
        wave = self.world.copy_of(work, seconds)
        await publish(self.settings, sid, wave, "upload")
        events = await read_topic(self.settings, self.settings.kafka.match_topic, finals_for([sid]), 120)
        want = reference_events(self.settings, self.engine, {sid: (wave, "upload")})
        assert _ids(events, sid) == _ids(want, sid), self.log.read_text()[-3000:]
        return events


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def run(world: World, kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Run]:
    t = f"faults-{uuid.uuid4().hex[:8]}"
    kafka = kafka_broker.client_settings(
        audio_topic=f"t.{t}.audio", match_topic=f"t.{t}.matches", dead_letter_topic=f"t.{t}.dlq",
        state_topic=f"t.{t}.state", group_id=f"g-{t}", client_id=f"c-{t}", transactional_id_prefix=f"tx-{t}",
        audio_partitions=PARTITIONS, request_timeout_ms=15_000)
    settings = world.settings.model_copy(update={"kafka": kafka})
    engine = build_engine(settings)
    await ensure_topics(settings.kafka)
    # Before the monitor starts: 10,000 finished checkpoints and one orphan (a stream that
    # never sends again; its checkpoint is an hour old and asks to re-read from offset 0).
    finished, open_ = _states_of(settings, engine, world)
    p = _partition("orph")
    st = decode_any(open_)
    assert isinstance(st, StreamState) and not st.finished
    orphan = encode(st.model_copy(update={"resume_offset": 0, "updated_at": time.time() - 3600}))
    fin = decode_any(finished)
    assert isinstance(fin, StreamState) and fin.finished and fin.chunk_index
    async with kafka_producer(settings) as prod:
        futs = [await prod.send(kafka.state_topic, key=f"done-{i}".encode(), partition=p,
                                value=encode(fin.model_copy(update={"stream_id": f"done-{i}", "resume_offset": 0})))
                for i in range(FINISHED)]
        futs.append(await prod.send(kafka.state_topic, key=b"orph", value=orphan, partition=p))
        await asyncio.gather(*futs)
    # what the orphan's final must be: its checkpoint finished with nothing more to come
    pipe = Pipeline(settings, engine)
    pipe.load_state(p, "orph", orphan)
    expected = pipe.process([], now=time.time() + settings.monitor.idle_evict_seconds + 1).events

    log = tmp_path_factory.mktemp("faults") / "monitor.log"
    t0 = time.monotonic()
    proc = spawn_monitor(world.env(settings), "0", log)
    r = Run(world, settings, engine, proc, log)
    r.orphan_final = _ids(expected, "orph")
    try:
        await wait_for_log(log, "partitions_assigned", 240, proc)
        r.startup_s = time.monotonic() - t0
        r.rss_after_start = _rss_mb(proc.pid)
        yield r
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except Exception:
                proc.kill()


async def test_ten_thousand_finished_states_at_start_up(run: Run) -> None:
    import json

    rss, peak = run.rss_after_start
    [line] = [ln for ln in run.log.read_text().splitlines() if '"partitions_assigned"' in ln]
    load = json.loads(line)
    print(f"start-up with {FINISHED} finished states: {run.startup_s:.1f} s (state load "
          f"{load['seconds']} s, {load['states']} records), RSS {rss:.0f} MB, peak {peak:.0f} MB")
    assert load["states"] >= FINISHED + 1 and load["seconds"] < 60
    assert run.alive()
    assert run.startup_s < 180, run.startup_s
    assert peak < 1500, peak  # the finished states are kept as three integers each


async def test_orphaned_checkpoint_gets_a_final_and_releases_the_offset(run: Run) -> None:
    p = _partition("orph")
    sid = _key_on(p, "alive")  # traffic on the orphan's partition moves its record clock
    await run.upload(sid, 12.0, "work-0")
    got = await read_topic(run.settings, run.settings.kafka.match_topic,
                           lambda ev: any(e.stream_id == "orph" for e in ev), 60)
    assert _ids(got, "orph") == run.orphan_final and [k for _, k, _ in run.orphan_final] == ["final"]
    assert max(Counter(e.event_id for e in got).values()) == 1  # each event once
    # the committed offset of the partition reaches its end (the orphan asked for 0)
    end = len(frames_of(run.settings, sid, run.world.copy_of("work-0", 12.0), "upload"))
    deadline = time.monotonic() + 30
    while (await _committed(run.settings)).get(p, 0) < end and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert (await _committed(run.settings)).get(p, 0) == end
    # the orphan and all 10,000 finished streams are tombstoned on the state topic
    want = {b"orph", *(f"done-{i}".encode() for i in range(FINISHED))}
    latest = await _read_raw(run.settings, run.settings.kafka.state_topic,
                             lambda kv: all(k in kv and kv[k] is None for k in want), 90)
    assert all(latest.get(k, b"") is None for k in want), sum(latest.get(k, b"") is None for k in want)
    assert run.alive()


async def test_probe_huge_start_sample(run: Run) -> None:
    """The issue's probe: seq 0, then seq 1 at start_sample 10**13, then a normal upload."""
    probe = [(b"probe", encode(_frame("probe", 0, 0))), (b"probe", encode(_frame("probe", 1, 10**13)))]
    [(p1, o1)] = (await run.send(probe))[1:]
    await run.upload("after-probe", 30.0)
    dlq = await read_topic(run.settings, run.settings.kafka.dead_letter_topic,
                           lambda r: any(d.key == b"probe" for d in r), 60, DeadLetter)
    assert [(d.reason, d.partition, d.offset) for d in dlq if d.key == b"probe"] == [("implausible_position", p1, o1)]
    assert run.alive()


async def test_poison_frames(run: Run) -> None:
    big = run.settings.audio.max_frame_bytes + 10_000
    nan = np.sin(np.arange(11_025) * 0.05).astype(np.float32)
    nan[::50], nan[1::50] = np.nan, np.inf
    poison: list[tuple[bytes | None, bytes]] = [
        (b"seqgap", encode(_frame("seqgap", 0, 0))),
        (b"seqgap", encode(_frame("seqgap", 10**7, 11_025, eos=True))),  # a seq jump of 10^7
        (b"timegap", encode(_frame("timegap", 0, 0))),
        (b"timegap", encode(_frame("timegap", 1, 11_025 + 40 * WIRE_RATE, eos=True))),  # 40 s hole
        (b"odd", encode(_frame("odd", 0, 0, rate=191_999))),
        (b"nan", encode(AudioFrame.from_samples(nan, stream_id="nan", seq=0, start_sample=0, sample_rate=WIRE_RATE,
                                                source="upload", sample_format="float32", eos=True))),
        (b"wrongkey", encode(_frame("someone-else", 0, 0))),
        (b"truncated", encode(_frame("truncated", 0, 0))[:-7]),
        (b"oversize", _raw("oversize", 0, 0, b"\x00" * big)),
    ]
    placed = dict(zip([k for k, _ in poison], await run.send(poison), strict=False))
    await run.upload("after-poison", 12.0)
    want = {b"odd": "unsupported_rate", b"wrongkey": "key_mismatch", b"truncated": "malformed", b"oversize": "oversize"}
    dlq = await read_topic(run.settings, run.settings.kafka.dead_letter_topic,
                           lambda r: want.keys() <= {d.key for d in r}, 60, DeadLetter)
    got = {d.key: (d.reason, d.partition, d.offset) for d in dlq if d.key in want}
    assert got == {k: (r, *placed[k]) for k, r in want.items()}
    assert Counter(d.key for d in dlq)[b"odd"] == 1
    events = await read_topic(run.settings, run.settings.kafka.match_topic, finals_for(["seqgap", "timegap", "nan"]), 60)
    assert {e.stream_id for e in events if e.kind == "final"} >= {"seqgap", "timegap", "nan"}
    gap_final = next(e for e in events if e.stream_id == "timegap" and e.kind == "final")
    assert gap_final.stream_span.end < 60  # 40 s of hole restarts the windowing: never filled
    assert run.alive()


def _fuzz_records(n_frames: int, n_garbage: int) -> list[tuple[bytes | None, bytes]]:
    """Hypothesis-generated AudioFrames (any valid field values, payloads of random bytes:
    NaN, inf, huge floats) and garbage bytes (random, or valid frames with bytes flipped)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    ids = st.sampled_from([f"fz-{i}" for i in range(12)])
    rates = st.one_of(st.sampled_from([8000, 16_000, 22_050, 44_100, 48_000, 96_000]), st.integers(8000, 192_000))

    @st.composite
    def frames(draw: Any) -> tuple[bytes | None, bytes]:
        channels = draw(st.integers(1, 8))
        fmt = draw(st.sampled_from(["int16", "float32"]))
        width = channels * (2 if fmt == "int16" else 4)
        eos = draw(st.booleans())
        n = draw(st.integers(0 if eos else 1, 2048 // width + 1))
        seq = draw(st.one_of(st.integers(0, 40), st.integers(0, 2**63 - 1)))  # msgpack's int64
        start = draw(st.one_of(st.just(min(seq * 11_025, 2**63 - 1)), st.integers(0, 40 * 11_025),
                               st.integers(0, 2**63 - 1)))
        f = AudioFrame(stream_id=draw(ids), seq=seq, start_sample=start, sent_at=draw(st.floats(allow_nan=True)),
                       sample_rate=draw(rates), channels=channels, sample_format=fmt,
                       source=draw(st.sampled_from(["upload", "live"])), eos=eos,
                       payload=draw(st.binary(min_size=n * width, max_size=n * width)),
                       title=draw(st.one_of(st.none(), st.text(max_size=20))))
        key = draw(st.one_of(st.just(f.stream_id.encode()), st.none(), st.binary(max_size=8)))
        return key, encode(f)

    @st.composite
    def garbage(draw: Any) -> tuple[bytes | None, bytes]:
        base = draw(st.one_of(st.binary(max_size=3000), frames().map(lambda kv: kv[1])))
        flips = draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6))
        buf = bytearray(base)
        for i, b in flips:
            if buf:
                buf[i % len(buf)] = b
        return draw(st.one_of(st.none(), st.binary(max_size=8))), bytes(buf)

    out: list[tuple[bytes | None, bytes]] = []
    for strategy, count in ((frames(), n_frames), (garbage(), n_garbage)):
        @settings(max_examples=count, database=None, derandomize=True, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def collect(rec: tuple[bytes | None, bytes]) -> None:
            out.append(rec)

        collect()
    return out


async def test_fuzzed_frames_and_garbage(run: Run) -> None:
    records = _fuzz_records(400, 200)
    assert len(records) >= 500
    undecodable = {}
    for _key, v in records:
        try:
            decode_any(v)
        except WireError as exc:
            undecodable[v] = exc.reason
    rss0, _ = _rss_mb(run.proc.pid)
    t0 = time.monotonic()
    placed = await run.send(records)
    await run.upload("after-fuzz", 12.0)
    at = set(placed)
    dlq = await read_topic(run.settings, run.settings.kafka.dead_letter_topic,
                           lambda r: sum(1 for d in r if (d.partition, d.offset) in at) >= len(undecodable), 60,
                           DeadLetter)
    seconds = time.monotonic() - t0
    rss1, peak = _rss_mb(run.proc.pid)
    mine = [d for d in dlq if (d.partition, d.offset) in at]
    print(f"fuzz: {len(records)} records ({len(undecodable)} undecodable) in {seconds:.1f} s; "
          f"RSS {rss0:.0f} -> {rss1:.0f} MB, peak {peak:.0f} MB; dead letters {Counter(d.reason for d in mine)}")
    assert run.alive()
    assert Counter((d.partition, d.offset) for d in mine).most_common(1)[0][1] == 1  # none twice
    where = {pl: v for pl, (_, v) in zip(placed, records, strict=True)}
    got = {(d.partition, d.offset): d.reason for d in mine}
    want = {pl: undecodable[v] for pl, v in where.items() if v in undecodable}
    assert {pl: got.get(pl) for pl in want} == want  # every undecodable record, with its reason
    assert "processing_error" not in set(got.values())  # no fault anywhere in the pipeline
    assert seconds < 150, seconds
    assert rss1 - rss0 < 250, (rss0, rss1)
    text = run.log.read_text()
    assert "stream_fault" not in text and "events_without_partition" not in text
