"""Producers: the live-capture buffer (bounded in samples, drops made visible, order kept),
and files that break off part-way, sent through a real broker (an aborted eos, not silence)."""

from __future__ import annotations

import asyncio
import fractions
from pathlib import Path

import av
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from monitor_world import World

from consumers.kafka import consumer_kwargs
from consumers.producer import CaptureBuffer, send_files
from streamcover.audio.decode import TruncatedAudioError, UnsafeInputError
from streamcover.config import KafkaSettings, Settings
from streamcover.events import AudioFrame, decode, encode


def test_capture_buffer_drops_beyond_its_bound_and_says_where() -> None:
    async def run() -> list[object]:
        buf = CaptureBuffer(max_samples=10)
        for n in (4, 4, 4, 3, 1):  # 4 + 4 fit; 4 and 3 are dropped (merged); 1 fits again
            buf.put(np.full(n, n, dtype=np.float32))
        assert buf.buffered == 9 and buf.dropped == 7
        got: list[object] = [await buf.get() for _ in range(4)]
        buf.put(np.zeros(10, dtype=np.float32))  # room again once the loop has caught up
        buf.finish()
        got += [await buf.get(), await buf.get()]
        return got

    got = asyncio.run(run())
    kinds = [("drop", g) if isinstance(g, int) else ("end", None) if g is None
             else ("block", len(g)) for g in got]  # type: ignore[arg-type]
    assert kinds == [("block", 4), ("block", 4), ("drop", 7), ("block", 1), ("block", 10),
                     ("end", None)]


def test_capture_buffer_get_waits_for_the_callback() -> None:
    async def run() -> object:
        buf = CaptureBuffer(max_samples=100)
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, buf.put, np.ones(5, dtype=np.float32))
        return await asyncio.wait_for(buf.get(), timeout=5)

    got = asyncio.run(run())
    assert isinstance(got, np.ndarray) and len(got) == 5


def _write_flac(path: Path, seconds: float, sr: int = 44_100) -> None:
    t = np.arange(int(sr * seconds)) / sr
    x = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
    with av.open(str(path), "w", format="flac") as out:
        st = out.add_stream("flac", rate=sr)
        st.layout = "mono"
        for i in range(0, x.shape[1], 4096):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + 4096]), format="fltp",
                                            layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = sr, i, fractions.Fraction(1, sr)
            for pkt in st.encode(fr):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)


async def _read_all(kafka: KafkaSettings, expect_eos: bool) -> list[AudioFrame]:
    consumer = AIOKafkaConsumer(kafka.audio_topic, **consumer_kwargs(kafka))
    await consumer.start()
    frames: list[AudioFrame] = []
    try:
        async with asyncio.timeout(60):
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    frames += [decode(r.value, AudioFrame) for r in records if r.value is not None]
                if not batch and (not expect_eos or any(f.eos for f in frames)):
                    break
    finally:
        await consumer.stop()
    return sorted(frames, key=lambda f: f.seq)


async def test_truncated_upload_ends_its_stream_with_an_aborted_eos(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    path = tmp_path / "upload.flac"
    _write_flac(path, 12.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    settings = Settings(kafka=kafka_settings)
    with pytest.raises(TruncatedAudioError) as info:
        await send_files(settings, [path], "cut-upload", "upload", realtime=False)
    frames = await _read_all(kafka_settings, expect_eos=True)
    assert [f.seq for f in frames] == list(range(len(frames)))  # nothing lost, nothing twice
    last = frames[-1]
    assert last.eos and last.aborted is not None and "TruncatedAudioError" in last.aborted
    assert not any(f.eos or f.aborted for f in frames[:-1])
    assert all(f.stream_id == "cut-upload" for f in frames)
    sent = sum(f.num_samples for f in frames) / settings.audio.wire_sample_rate
    assert sent == pytest.approx(info.value.decoded_seconds, abs=1e-3)
    assert 3.0 < sent < 10.0


async def test_a_refused_file_sends_nothing(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    target = tmp_path / "other.flac"
    _write_flac(target, 2.0)
    script = tmp_path / "song.mp3"
    script.write_text(f"ffconcat version 1.0\nfile '{target.name}'\n")
    with pytest.raises(UnsafeInputError):
        await send_files(Settings(kafka=kafka_settings), [script], "refused", "upload",
                         realtime=False)
    assert await _read_all(kafka_settings, expect_eos=False) == []


def test_the_monitor_core_ends_an_aborted_stream_with_its_verdict(world: World) -> None:
    """An aborted eos is an end like any other: the stream gets its final at once."""
    from streamcover.monitor.engine import build_engine
    from streamcover.monitor.pipeline import InRecord, Pipeline

    rate = world.settings.audio.wire_sample_rate
    wave = world.copy_of("work-1", 30.0)[: 25 * rate]  # the upload broke off at 25 s
    step = round(world.settings.audio.frame_seconds * rate)
    frames = [AudioFrame.from_samples(wave[i:i + step], stream_id="cut", seq=k, start_sample=i,
                                      sample_rate=rate, source="upload")
              for k, i in enumerate(range(0, len(wave) - step + 1, step))]
    n = len(frames)
    frames.append(AudioFrame.from_samples(np.zeros(0, np.float32), stream_id="cut", seq=n,
                                          start_sample=n * step, sample_rate=rate, source="upload",
                                          eos=True, aborted="TruncatedAudioError: truncated"))
    recs = [InRecord("audio", 0, i, b"cut", encode(f), 0) for i, f in enumerate(frames)]
    pipe = Pipeline(world.settings, build_engine(world.settings))
    out = pipe.process(recs)
    assert out.dead_letters == []
    finals = [e for e in out.events if e.stream_id == "cut" and e.kind == "final"]
    assert len(finals) == 1 and finals[0].reference_id == "work-1"
    assert "cut" not in pipe.streams or pipe.streams["cut"].finished
