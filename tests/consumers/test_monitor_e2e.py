"""The monitor end to end against the real Kafka broker (tests/conftest.py), never a mock.
One file: every test shares the module's broker, world and running monitor.

Encoder and catalog: see tests/helpers/monitor_world.py — the untrained encoder with a fixed seed
and a catalog built with it, streams that are near-copies of catalogued works. These tests
prove the plumbing, decisions, timing and delivery guarantees, not cover recognition.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from monitor_harness import finals_for, publish, read_topic, running_monitor
from monitor_world import WIRE_RATE, World

from consumers.media import Version, make_score, render
from streamcover.config import Settings
from streamcover.events import MatchEvent

HOP_SAMPLES = 22 * 10_240  # one window hop (22 HPCP frames) at the wire rate: 10.22 s


def fresh_settings(world: World, kafka_broker: Any, tag: str, **kafka: Any) -> Settings:
    t = f"{tag}-{uuid.uuid4().hex[:8]}"
    names = dict(audio_topic=f"t.{t}.audio", match_topic=f"t.{t}.matches",
                 dead_letter_topic=f"t.{t}.dlq", state_topic=f"t.{t}.state", group_id=f"g-{t}",
                 client_id=f"c-{t}", transactional_id_prefix=f"tx-{t}", audio_partitions=3,
                 request_timeout_ms=15_000)
    names.update(kafka)
    return world.settings.model_copy(update={"kafka": kafka_broker.client_settings(**names)})


def live_set(world: World, order: tuple[int, ...] = (2, 0, 3), hops: int = 5) -> np.ndarray:
    """Three catalogued works back to back, each ``hops`` window hops long. Songs start on the
    window grid because the untrained encoder only recognises (near-)aligned copies."""
    return np.concatenate([world.copy_of(f"work-{i}", hops * HOP_SAMPLES / WIRE_RATE, noise_seed=i)
                           for i in order])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def main_run(world: World, kafka_broker: Any) -> dict[str, Any]:
    settings = fresh_settings(world, kafka_broker, "main")
    streams = {
        "cover-1": (world.copy_of("work-1", 45.0), "upload"),
        "unrelated-1": (render(make_score(999, 45.0), Version(timbre=2, gain=0.4), WIRE_RATE), "upload"),
        "short-1": (world.copy_of("jingle", 12.0), "upload"),
        "live-1": (live_set(world), "live"),
    }
    async with running_monitor(settings) as mon:
        await asyncio.gather(*(publish(settings, sid, w, src) for sid, (w, src) in streams.items()))  # type: ignore[arg-type]
        events = await read_topic(settings, settings.kafka.match_topic, finals_for(list(streams)), 180)
        from prometheus_client import generate_latest

        metrics = generate_latest(mon.metrics.registry).decode()
    return {"settings": settings, "events": events, "metrics": metrics}


def _of(events: list[MatchEvent], sid: str) -> list[MatchEvent]:
    return [e for e in events if e.stream_id == sid]


async def test_cover_upload_matches_right_reference_in_first_window(main_run: dict[str, Any]) -> None:
    ev = _of(main_run["events"], "cover-1")
    matches = [e for e in ev if e.kind == "match"]
    assert matches, [e.kind for e in ev]
    first = matches[0]
    assert first.reference_id == "work-1"
    assert first.stream_span.start == 0.0 and first.stream_span.end <= 20.5  # the first window
    assert first.reference["title"] == "Test Work 1"
    assert first.score >= main_run["settings"].match.threshold
    assert first.reference_span is not None and first.reference_span.start == 0.0
    assert first.model_id.startswith("untrained-") and first.catalog_version == "1"
    assert first.latency_ms >= 0
    final = [e for e in ev if e.kind == "final"]
    assert len(final) == 1 and final[0].reference_id == "work-1"
    assert all(e.reference_id == "work-1" for e in ev)


async def test_unrelated_upload_gets_no_match(main_run: dict[str, Any]) -> None:
    ev = _of(main_run["events"], "unrelated-1")
    assert [e.kind for e in ev] == ["final"]
    assert ev[0].reference_id is None
    assert ev[0].score < main_run["settings"].match.threshold


async def test_upload_shorter_than_a_window_gets_one_window(main_run: dict[str, Any]) -> None:
    ev = _of(main_run["events"], "short-1")
    assert [e.kind for e in ev] == ["match", "final"]
    assert ev[0].reference_id == "jingle" and ev[0].chunks_used == 1
    assert ev[0].stream_span.end <= 12.5


async def test_live_stream_set_list_and_boundaries_within_one_hop(main_run: dict[str, Any]) -> None:
    ev = _of(main_run["events"], "live-1")
    hop_s = HOP_SAMPLES / WIRE_RATE
    segs = [e for e in ev if e.kind == "setlist_segment"]
    assert [e.reference_id for e in segs] == ["work-2", "work-0", "work-3"]
    truth = [(i * 5 * hop_s, (i + 1) * 5 * hop_s) for i in range(3)]
    for e, (start, end) in zip(segs, truth, strict=True):
        assert abs(e.stream_span.start - start) <= hop_s, (e.stream_span, start)
        assert abs(e.stream_span.end - end) <= hop_s, (e.stream_span, end)
    setlist = [e for e in ev if e.kind == "setlist"]
    assert len(setlist) == 1
    assert [s.reference_id for s in setlist[0].setlist] == ["work-2", "work-0", "work-3"]
    assert [e.kind for e in ev].count("match") == 3


async def test_every_event_id_is_unique_and_metrics_count(main_run: dict[str, Any]) -> None:
    ids = Counter(e.event_id for e in main_run["events"])
    assert ids and max(ids.values()) == 1
    m = main_run["metrics"]
    assert "streamcover_windows_embedded_total" in m
    windows = float(next(line.split()[-1] for line in m.splitlines()
                         if line.startswith("streamcover_windows_embedded_total")))
    assert windows >= 3 + 3 + 1 + 14
    assert 'streamcover_events_out_total{kind="setlist_segment"} 3.0' in m


# ---- bad input: every case has a defined outcome, and the service keeps going --------------

def _raw_frame(sid: str, seq: int, start: int, payload: bytes, **kw: Any) -> bytes:
    import msgpack

    rec: dict[str, Any] = dict(v=1, type="audio", stream_id=sid, seq=seq, start_sample=start,
                               sent_at=0.0, sample_rate=WIRE_RATE, channels=1, sample_format="int16",
                               source="upload", eos=False, payload=payload, title=None)
    rec.update(kw)
    return msgpack.packb(rec, use_bin_type=True)


async def test_bad_input_is_converted_skipped_or_dead_lettered(world: World, kafka_broker: Any) -> None:
    import msgpack

    from consumers.producer import kafka_producer
    from streamcover.events import AudioFrame, DeadLetter, encode

    settings = fresh_settings(world, kafka_broker, "bad")
    k = settings.kafka
    wave = world.copy_of("work-0", 42.0)
    step = 11_025
    frames = [AudioFrame.from_samples(wave[i : i + step], stream_id="messy", seq=n, start_sample=i,
                                      sample_rate=WIRE_RATE, source="upload")
              for n, i in enumerate(range(0, len(wave) - step, step))]
    # gaps / duplicates / out-of-order: swap 3 and 4, repeat 5, lose 9 (filled with silence)
    order = [f for f in frames[:3]] + [frames[4], frames[3], frames[5], frames[5]] + frames[6:9] + frames[10:]
    # NaN/inf samples in a float32 frame (converted to zeros), stereo (mixed down)
    nan_wave = wave[len(frames) * step : len(frames) * step + step].copy()
    nan_wave[::100] = np.nan
    nan_wave[1::100] = np.inf
    tail_nan = AudioFrame.from_samples(nan_wave, stream_id="messy", seq=len(frames), start_sample=len(frames) * step,
                                       sample_rate=WIRE_RATE, source="upload", sample_format="float32")
    eos = AudioFrame.from_samples(np.stack([wave[:10], wave[:10]], axis=1), stream_id="messy",
                                  seq=len(frames) + 1, start_sample=(len(frames) + 1) * step,
                                  sample_rate=WIRE_RATE, source="upload", eos=True)
    # a whole stream at 44.1 kHz stereo (resampled, mixed down): still matches
    hi = np.repeat(world.copy_of("work-2", 42.0), 2)
    hi_frames = [AudioFrame.from_samples(np.stack([hi[i : i + 22050], hi[i : i + 22050]], axis=1),
                                         stream_id="hirate", seq=n, start_sample=i, sample_rate=44_100,
                                         source="upload", eos=i + 22050 >= len(hi))
                 for n, i in enumerate(range(0, len(hi), 22050))]
    bad = [
        (b"garbage", b"\xc1\xff\x00not msgpack"),
        (b"vers", msgpack.packb({"v": 99, "type": "audio"})),
        (b"dtype", _raw_frame("dtype", 0, 0, b"\x00" * 8, sample_format="int32")),
        (b"oversize", _raw_frame("oversize", 0, 0, b"\x00" * (settings.audio.max_frame_bytes + 10_000))),
        (b"odd", _raw_frame("odd", 0, 0, b"\x00" * 3)),  # not a whole number of samples
        (b"wrongkey", encode(frames[0].model_copy(update={"stream_id": "someone-else"}))),
    ]
    async with running_monitor(settings):
        async with kafka_producer(settings) as prod:
            for key, value in bad:
                await prod.send(k.audio_topic, key=key, value=value)
            for f in [*order, tail_nan, eos]:
                await prod.send(k.audio_topic, key=b"messy", value=encode(f))
            for f in hi_frames:
                await prod.send(k.audio_topic, key=b"hirate", value=encode(f))
            await prod.flush()
        events = await read_topic(settings, k.match_topic, finals_for(["messy", "hirate"]), 120)
        dlq = await read_topic(settings, k.dead_letter_topic, lambda r: len(r) >= len(bad), 60, DeadLetter)
    reasons = {d.key: d.reason for d in dlq}
    assert reasons == {b"garbage": "malformed", b"vers": "unknown_version", b"dtype": "invalid",
                       b"oversize": "oversize", b"odd": "invalid", b"wrongkey": "key_mismatch"}
    originals = {d.key: d.original for d in dlq}
    assert originals[b"garbage"] == bad[0][1] and originals[b"vers"] == bad[1][1]
    messy = [e for e in events if e.stream_id == "messy"]
    assert messy[0].kind == "match" and messy[0].reference_id == "work-0"
    assert messy[-1].kind == "final" and messy[-1].reference_id == "work-0"
    # the clock survived the hole and the reordering: the stream is 42 s long
    assert abs(messy[-1].stream_span.end - 42.0) < 3.0
    hirate = [e for e in events if e.stream_id == "hirate"]
    assert hirate[0].kind == "match" and hirate[0].reference_id == "work-2"


# ---- delivery: crash, restart, rebalance ---------------------------------------------------

def _crash_streams(world: World) -> dict[str, tuple[np.ndarray, Any]]:
    return {
        "c-up": (world.copy_of("work-1", 61.0), "upload"),
        "c-live": (live_set(world, (1, 3, 0), hops=4), "live"),
        "c-up2": (world.copy_of("work-2", 50.0), "upload"),
    }


def _crash_setup(world: World, kafka_broker: Any, tag: str) -> tuple[Settings, dict[str, Any], list[MatchEvent]]:
    """Fresh settings, the crash streams and what one uninterrupted pipeline decides on them."""
    from monitor_harness import reference_events

    from streamcover.monitor.engine import build_engine

    settings = fresh_settings(world, kafka_broker, tag)
    streams = _crash_streams(world)
    return settings, streams, reference_events(settings, build_engine(settings), streams)


def _assert_same_events(got: list[MatchEvent], want: list[MatchEvent]) -> None:
    ids = Counter(e.event_id for e in got)
    dup = {i: n for i, n in ids.items() if n > 1}
    assert not dup, f"duplicates seen by a read_committed reader: {dup}"
    assert sorted((e.event_id, e.kind, e.reference_id) for e in got) == sorted(
        (e.event_id, e.kind, e.reference_id) for e in want)


@pytest.mark.slow
async def test_kill9_mid_stream_then_restart_loses_and_duplicates_nothing(
    world: World, kafka_broker: Any, tmp_path: Path
) -> None:
    import os
    import signal

    from monitor_harness import spawn_monitor, wait_for_log

    settings, streams, want = _crash_setup(world, kafka_broker, "kill")
    env = world.env(settings)
    log = tmp_path / "monitor.log"
    proc = spawn_monitor(env, "0", log)
    try:
        await wait_for_log(log, "partitions_assigned", 240, proc)
        sending = asyncio.gather(*(publish(settings, sid, w, src, speed=3.0) for sid, (w, src) in streams.items()))
        first = await read_topic(settings, settings.kafka.match_topic, lambda ev: len(ev) >= 3, 180)
        assert len(first) >= 3, log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: frames are still being sent
        proc.wait(30)
        assert not finals_for(list(streams))(first), "the crash came too late to test anything"
        proc = spawn_monitor(env, "0", log)
        await sending
        got = await read_topic(settings, settings.kafka.match_topic, finals_for(list(streams)), 240)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]  # SIGTERM drains and exits cleanly
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "stream_restored" in text  # the restart really resumed from checkpoints
    _assert_same_events(got, want)


async def test_a_batch_interval_floor_batches_fewer_and_loses_nothing(world: World, kafka_broker: Any) -> None:
    """With ``monitor.min_batch_interval_ms`` one batch (one transaction per partition) starts
    at most once per interval, and the events are exactly those of one uninterrupted run."""
    import time

    from monitor_harness import reference_events

    from streamcover.monitor.engine import build_engine

    base = fresh_settings(world, kafka_broker, "floor")
    settings = base.model_copy(update={"monitor": base.monitor.model_copy(update={"min_batch_interval_ms": 1000})})
    streams = {"floor-up": (world.copy_of("work-1", 31.0), "upload"),
               "floor-live": (world.copy_of("work-2", 31.0), "live")}
    engine = build_engine(settings)
    want = reference_events(settings, engine, streams)
    async with running_monitor(settings, engine) as mon:
        t0 = time.monotonic()
        await asyncio.gather(*(publish(settings, sid, w, src, speed=4.0) for sid, (w, src) in streams.items()))  # type: ignore[arg-type]
        got = await read_topic(settings, settings.kafka.match_topic, finals_for(list(streams)), 180)
        elapsed = time.monotonic() - t0
        batches = mon.batches
    _assert_same_events(got, want)
    # 62 frames each, about 8 s of sending: without the floor every poll is a batch
    assert 0 < batches <= elapsed / 1.0 + 2, (batches, elapsed)


@pytest.mark.slow
async def test_two_monitors_with_a_rebalance_give_the_same_events_as_one(
    world: World, kafka_broker: Any
) -> None:
    from monitor_harness import reference_events

    from streamcover.monitor.engine import build_engine

    settings = fresh_settings(world, kafka_broker, "rebal")
    streams = _crash_streams(world)
    engine = build_engine(settings)
    want = reference_events(settings, engine, streams)
    s1 = settings.model_copy(update={"monitor": settings.monitor.model_copy(update={"instance_id": "a"})})
    s2 = settings.model_copy(update={"monitor": settings.monitor.model_copy(update={"instance_id": "b"})})
    async with running_monitor(s1, engine) as m1:
        sending = asyncio.gather(*(publish(settings, sid, w, src, speed=3.0) for sid, (w, src) in streams.items()))
        await read_topic(settings, settings.kafka.match_topic, lambda ev: len(ev) >= 2, 180)
        async with running_monitor(s2, build_engine(settings)) as m2:  # joins: partitions move
            await sending
            got = await read_topic(settings, settings.kafka.match_topic, finals_for(list(streams)), 240)
            moved = m2.assigned
    assert moved, "the second monitor never got a partition"
    assert m1.metrics.transactions._value.get() > 0
    _assert_same_events(got, want)


async def test_monitor_over_sasl_ssl(world: World, kafka_broker: Any) -> None:
    settings = fresh_settings(world, kafka_broker, "sasl")
    secure = kafka_broker.client_settings(secure=True, **{
        k: getattr(settings.kafka, k) for k in ("audio_topic", "match_topic", "dead_letter_topic",
                                                  "state_topic", "group_id", "client_id",
                                                  "transactional_id_prefix", "audio_partitions")})
    settings = settings.model_copy(update={"kafka": secure})
    assert settings.kafka.security_protocol == "SASL_SSL"
    async with running_monitor(settings):
        await publish(settings, "secure-1", world.copy_of("work-0", 25.0), "upload")
        events = await read_topic(settings, settings.kafka.match_topic, finals_for(["secure-1"]), 120)
    assert [e.kind for e in events] == ["match", "final"]
    assert events[0].reference_id == "work-0"


# ---- the microphone producer, through the real PortAudio/ALSA path -------------------------

_ASOUNDRC = """
pcm.streamcover_null {{ type null }}
pcm.streamcover_file {{
    type file
    slave.pcm "streamcover_null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
"""


def _mic_home(tmp: Path, wave: np.ndarray) -> Path:
    """A test-only HOME whose ~/.asoundrc defines an ALSA capture device reading ``wave``
    (float32 mono at the wire rate) from a file: PortAudio and ALSA run for real."""
    home = tmp / "home"
    home.mkdir()
    infile = tmp / "mic.raw"
    wave.astype("<f4").tofile(infile)
    (home / ".asoundrc").write_text(_ASOUNDRC.format(infile=infile))
    return home


def _mic_cmd(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "consumers", "--log-format", "json", "mic", *args]


async def test_mic_capture_through_portaudio_matches(world: World, kafka_broker: Any, tmp_path: Path) -> None:
    import os
    import subprocess

    base = fresh_settings(world, kafka_broker, "mic")
    # 12 s of capture is one chunk: let one agreeing chunk open a live segment (the default,
    # match.live_min_chunks 2, needs about 30 s of a piece), so the capture path stays short.
    settings = base.model_copy(update={"match": base.match.model_copy(update={"live_min_chunks": 1})})
    home = _mic_home(tmp_path, world.copy_of("jingle", 13.0))
    env = {**os.environ, **world.env(settings), "HOME": str(home)}
    listed = subprocess.run(_mic_cmd("--list-devices"), env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "streamcover_file" in listed.stdout
    async with running_monitor(settings):
        proc = await asyncio.create_subprocess_exec(
            *_mic_cmd("--device", "streamcover_file", "--seconds", "12", "--stream-id", "mic-1",
                      "--block-seconds", "0.25"), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, out.decode()[-2000:]
        events = await read_topic(settings, settings.kafka.match_topic, lambda ev: any(e.kind == "setlist" for e in ev), 90)
    kinds = [(e.kind, e.reference_id) for e in events]
    assert ("match", "jingle") in kinds, kinds
    assert all(e.source == "live" and e.stream_id == "mic-1" for e in events)


async def test_mic_stops_cleanly_on_ctrl_c(world: World, kafka_broker: Any, tmp_path: Path) -> None:
    import os
    import signal

    settings = fresh_settings(world, kafka_broker, "micint")
    home = _mic_home(tmp_path, world.copy_of("work-0", 30.0))
    # A small capture buffer, so the faster-than-real-time test device (below) overflows it.
    env = {**os.environ, **world.env(settings), "HOME": str(home),
           "STREAMCOVER_AUDIO__CAPTURE_BUFFER_SECONDS": "0.5"}
    proc = await asyncio.create_subprocess_exec(
        *_mic_cmd("--device", "streamcover_file", "--stream-id", "mic-int"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    frames: list[Any] = []
    from streamcover.events import AudioFrame

    frames = await read_topic(settings, settings.kafka.audio_topic, lambda fs: len(fs) >= 3, 90, AudioFrame)
    proc.send_signal(signal.SIGINT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()[-2000:]
    frames = await read_topic(settings, settings.kafka.audio_topic, lambda fs: any(f.eos for f in fs), 30, AudioFrame)
    assert frames[-1].eos and frames[0].seq == 0 and frames[0].start_sample == 0
    # The test device is a file behind ALSA's null PCM, which delivers audio as fast as it
    # is read, far faster than real time: past audio.capture_buffer_seconds the mic drops
    # blocks, and every loss shows as a gap in both seq and start_sample (never a splice).
    frame_samples = round(settings.audio.frame_seconds * WIRE_RATE)
    lost = 0
    for a, b in itertools.pairwise(frames):
        gap = b.start_sample - (a.start_sample + a.num_samples)
        assert gap >= 0 and b.seq - a.seq - 1 == -(-gap // frame_samples), (a, b)
        lost += gap
    stopped = [json.loads(line) for line in out.decode().splitlines()
               if line.startswith("{") and '"mic_stopped"' in line]
    assert stopped and abs(stopped[0]["lost_seconds"] - lost / WIRE_RATE) <= 0.006


async def test_send_cli_publishes_a_file_as_frames(world: World, kafka_broker: Any, tmp_path: Path) -> None:
    import os

    import soundfile as sf

    from streamcover.events import AudioFrame

    settings = fresh_settings(world, kafka_broker, "send")
    wave = world.copy_of("work-0", 7.3)
    path = tmp_path / "clip.flac"
    sf.write(path, np.stack([wave, wave], axis=1), 44_100)  # stereo 44.1 kHz file: decoded to mono 22.05 kHz
    env = {**os.environ, **world.env(settings)}
    proc = await asyncio.create_subprocess_exec(
        sys_executable(), "-m", "consumers", "send", str(path), "--stream-id", "sent-1", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().startswith("sent-1\t")
    frames = await read_topic(settings, settings.kafka.audio_topic, lambda fs: any(f.eos for f in fs), 60, AudioFrame)
    assert [f.seq for f in frames] == list(range(len(frames))) and frames[-1].eos
    assert all(f.sample_rate == WIRE_RATE and f.channels == 1 for f in frames)
    total = sum(f.num_samples for f in frames)
    # len(wave) samples at 44.1 kHz in the file -> half as many at the 22.05 kHz wire rate
    assert abs(total - len(wave) * WIRE_RATE / 44_100) < 50
    starts = [f.start_sample for f in frames]
    assert starts == [sum(f.num_samples for f in frames[:i]) for i in range(len(frames))]
    missing = await asyncio.create_subprocess_exec(
        sys_executable(), "-m", "consumers", "send", str(tmp_path / "nope.wav"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await missing.communicate()
    assert missing.returncode == 2 and b"nope.wav" in err


def sys_executable() -> str:
    import sys

    return sys.executable


async def test_setlist_command_asks_a_running_monitor(world: World, kafka_broker: Any) -> None:
    """`streamcover setlist ID` (its own process) gets the open live stream's set list."""
    import os
    import sys

    from consumers.producer import FramePublisher, kafka_producer

    settings = fresh_settings(world, kafka_broker, "setcli")
    wave = live_set(world, order=(2, 0), hops=4)
    async with running_monitor(settings) as mon:
        async with kafka_producer(settings) as producer:
            pub = FramePublisher(producer, settings, "live-open", "live", settings.audio.wire_sample_rate)
            for i in range(0, len(wave), pub.frame_samples):
                await pub.push(wave[i : i + pub.frame_samples])
            # no close(): the stream stays open, as a live stream does
        seen = await read_topic(settings, settings.kafka.match_topic,
                                lambda ev: any(e.kind == "setlist_segment" for e in ev), 120)
        assert any(e.reference_id == "work-2" for e in seen)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "setlist", "live-open", "--timeout", "60",
            env={**os.environ, **world.env(settings)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()[-2000:]
        rows = [line for line in out.decode().splitlines() if "Test Work" in line]
        assert len(rows) == 2 and "Test Work 2" in rows[0] and "Test Work 0" in rows[1], out.decode()
        assert "0:00.0" in rows[0]
        assert mon.pipeline.streams["live-open"].finished is False
        # An unknown stream gets a clear "no answer" and exit code 1, not a hang.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumers", "setlist", "no-such-stream", "--timeout", "5",
            env={**os.environ, **world.env(settings)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1 and "no answer" in err.decode()


@pytest.mark.slow
async def test_workers_share_the_group_and_a_dead_worker_is_restarted(
    world: World, kafka_broker: Any, tmp_path: Path
) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys

    from monitor_harness import ROOT, wait_for_log

    settings, streams, want = _crash_setup(world, kafka_broker, "workers")
    log = tmp_path / "supervisor.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumers", "--log-format", "json", "monitor", "--workers", "2",
             "--instance-id", "box"],
            cwd=ROOT, env={**os.environ, **world.env(settings), "PYTHONUNBUFFERED": "1"},
            stdout=fh, stderr=subprocess.STDOUT)
    try:
        for _ in range(480):  # both workers are members, with partitions
            text = log.read_text(errors="replace")
            if text.count('"partitions_assigned"') >= 2 and '"box-w1"' in text and '"box-w0"' in text:
                break
            assert proc.poll() is None, text[-3000:]
            await asyncio.sleep(0.5)
        sending = asyncio.gather(*(publish(settings, sid, w, src, speed=3.0) for sid, (w, src) in streams.items()))
        first = await read_topic(settings, settings.kafka.match_topic, lambda ev: len(ev) >= 3, 180)
        pids = [int(p) for p in re.findall(r'"worker": "w0", "pid": (\d+)', log.read_text())]
        assert pids, log.read_text()[-3000:]
        os.kill(pids[0], signal.SIGKILL)
        await wait_for_log(log, '"worker_exited"', 60, proc)
        assert not finals_for(list(streams))(first), "the kill came too late to test anything"
        await sending
        got = await read_topic(settings, settings.kafka.match_topic, finals_for(list(streams)), 240)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert text.count('"worker_started"') == 3  # two workers, one restart
    assert '"code": -9' in text
    _assert_same_events(got, want)
