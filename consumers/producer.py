"""Producers: files (``streamcover send``) and microphones (``streamcover mic``) → AudioFrames.

A stream is a sequence of :class:`streamcover.events.AudioFrame` keyed by the stream id,
numbered from 0 (``seq``) with exact sample positions, ending with an ``eos`` frame. The
Kafka producer is idempotent (acks=all), so its own retries never duplicate a frame.

A file that breaks off part-way (truncated, damaged, over a decode limit) still ends its
stream: the eos frame then carries ``aborted`` with the reason, so the monitor closes the
stream at once instead of waiting for it to go idle, and ``send`` reports the error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from consumers.kafka import ensure_topics, producer_kwargs
from streamcover.config import Settings
from streamcover.events import AudioFrame, SetListRequest, SourceKind, encode
from streamcover.log import get_logger

log = get_logger(__name__)


class FramePublisher:
    """Cuts a mono waveform (pushed in any block sizes) into frames of one stream."""

    def __init__(self, producer: Any, settings: Settings, stream_id: str, source: SourceKind,
                 sample_rate: int, title: str | None = None, realtime: bool = False) -> None:
        self.producer = producer
        self.settings = settings
        self.stream_id = stream_id
        self.source = source
        self.sample_rate = sample_rate
        self.title = title
        self.realtime = realtime
        self.frame_samples = max(1, round(settings.audio.frame_seconds * sample_rate))
        self.seq = 0
        self.position = 0
        self._pending = np.zeros(0, dtype=np.float32)
        self._t0: float | None = None
        self.sent_frames = 0
        self.skipped_samples = 0

    @property
    def started(self) -> bool:
        """Whether any audio of this stream was sent or is waiting to be."""
        return self.seq > 0 or self._pending.size > 0

    async def _send(self, samples: np.ndarray, eos: bool, aborted: str | None = None) -> None:
        if self.realtime:
            if self._t0 is None:
                self._t0 = time.monotonic()
            # a frame can be sent once its last sample has "happened"
            due = self._t0 + (self.position + len(samples)) / self.sample_rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        frame = AudioFrame.from_samples(
            samples, stream_id=self.stream_id, seq=self.seq, start_sample=self.position,
            sample_rate=self.sample_rate, source=self.source, eos=eos,
            title=self.title if self.seq == 0 else None, aborted=aborted,
        )
        await self.producer.send(self.settings.kafka.audio_topic, key=self.stream_id.encode(),
                                 value=encode(frame))
        self.seq += 1
        self.position += len(samples)
        self.sent_frames += 1

    async def push(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._pending = np.concatenate([self._pending, x]) if self._pending.size else x
        while self._pending.size >= self.frame_samples:
            chunk, self._pending = self._pending[: self.frame_samples], self._pending[self.frame_samples :]
            await self._send(chunk, eos=False)

    def skip(self, samples: int) -> None:
        """Account for audio lost before it could be sent (a live source over capacity).

        The partial frame waiting here is lost with it, and ``seq`` and ``start_sample``
        jump past the loss, so consumers see a hole (silence or a restart), never a splice
        of audio from either side of it.
        """
        lost = int(self._pending.size) + int(samples)
        if lost <= 0:
            return
        self._pending = np.zeros(0, dtype=np.float32)
        self.position += lost
        self.seq += -(-lost // self.frame_samples)
        self.skipped_samples += lost

    async def close(self, aborted: str | None = None) -> None:
        """Send what is left as the end-of-stream frame and wait for delivery; ``aborted``
        (why) marks a stream that ended early."""
        await self._send(self._pending, eos=True, aborted=aborted[:512] if aborted else None)
        self._pending = np.zeros(0, dtype=np.float32)
        await self.producer.flush()


@contextlib.asynccontextmanager
async def kafka_producer(settings: Settings) -> AsyncIterator[Any]:
    from aiokafka import AIOKafkaProducer

    await ensure_topics(settings.kafka)
    producer = AIOKafkaProducer(**producer_kwargs(settings.kafka))
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def default_stream_id(path: Path | None = None) -> str:
    stem = path.stem[:64] if path is not None else "mic"
    return f"{stem}-{uuid.uuid4().hex[:8]}"


async def send_waveforms(settings: Settings, stream_id: str, blocks: Iterable[np.ndarray],
                         sample_rate: int, source: SourceKind = "upload", *, realtime: bool = False,
                         title: str | None = None, producer: Any = None) -> int:
    """Publish one stream from blocks of mono samples; returns frames sent (incl. eos).

    If ``blocks`` fails part-way (a decode error) after audio went out, the stream is ended
    with an aborted eos frame naming the error, and the error is raised again.
    """
    async with contextlib.AsyncExitStack() as stack:
        if producer is None:
            producer = await stack.enter_async_context(kafka_producer(settings))
        pub = FramePublisher(producer, settings, stream_id, source, sample_rate, title, realtime)
        it = iter(blocks)
        while True:
            try:
                block = next(it)
            except StopIteration:
                break
            except Exception as exc:
                if pub.started:
                    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
                    await pub.close(aborted=f"{type(exc).__name__}: {reason}")
                    log.warning("stream_aborted", stream=stream_id, frames=pub.sent_frames,
                                error=str(exc)[:300])
                raise
            await pub.push(block)
        await pub.close()
        return pub.sent_frames


def _file_blocks(paths: Iterable[Path], sample_rate: int) -> Iterator[np.ndarray]:
    from streamcover.audio.decode import iter_audio

    for p in paths:
        yield from iter_audio(p, sample_rate, block_seconds=5.0)


async def send_files(settings: Settings, paths: list[Path], stream_id: str | None,
                     source: SourceKind, realtime: bool) -> list[tuple[str, int]]:
    """``streamcover send``: one stream per file, or all files as one stream with ``stream_id``."""
    rate = settings.audio.wire_sample_rate
    sent: list[tuple[str, int]] = []
    async with kafka_producer(settings) as producer:
        if stream_id is not None:
            n = await send_waveforms(settings, stream_id, _file_blocks(paths, rate), rate, source,
                                     realtime=realtime, title=" + ".join(p.name for p in paths),
                                     producer=producer)
            sent.append((stream_id, n))
        else:
            for p in paths:
                sid = default_stream_id(p)
                n = await send_waveforms(settings, sid, _file_blocks([p], rate), rate, source,
                                         realtime=realtime, title=p.name, producer=producer)
                sent.append((sid, n))
    return sent


async def request_setlist(settings: Settings, stream_id: str, request_id: str | None = None) -> str:
    """Ask the owning monitor for a stream's whole set list (answered on the match topic)."""
    rid = request_id or uuid.uuid4().hex
    async with kafka_producer(settings) as producer:
        req = SetListRequest(stream_id=stream_id, request_id=rid, sent_at=time.time())
        await producer.send_and_wait(settings.kafka.audio_topic, key=stream_id.encode(), value=encode(req))
    return rid


# ---- microphone -------------------------------------------------------------------------------

def list_devices() -> str:
    import sounddevice as sd

    return str(sd.query_devices())


async def capture_mic(settings: Settings, stream_id: str, *, device: str | int | None = None,
                      block_seconds: float = 0.5, latency: str | float = "high",
                      sample_rate: int | None = None, stop: asyncio.Event | None = None,
                      max_seconds: float | None = None) -> int:
    """Capture from a PortAudio input device and publish it as a live stream until ``stop``
    (or ``max_seconds`` of audio, or the device ends); returns frames sent.

    At most ``audio.capture_buffer_seconds`` of audio waits for the broker; blocks captured
    beyond that are dropped, counted, logged and sent as a gap (``FramePublisher.skip``).
    """
    import sounddevice as sd

    rate = sample_rate or settings.audio.wire_sample_rate
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    buffer = CaptureBuffer(round(settings.audio.capture_buffer_seconds * rate))
    status_flags: list[str] = []

    def callback(indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        if status:
            status_flags.append(str(status))
        loop.call_soon_threadsafe(buffer.put, indata[:, 0].copy())

    def finished() -> None:
        loop.call_soon_threadsafe(buffer.finish)

    blocksize = max(1, round(block_seconds * rate))
    dev: str | int | None = int(device) if isinstance(device, str) and device.isdigit() else device
    async with kafka_producer(settings) as producer:
        pub = FramePublisher(producer, settings, stream_id, "live", rate, title=f"mic:{device}")
        with sd.InputStream(samplerate=rate, blocksize=blocksize, device=dev, channels=1,
                            dtype="float32", latency=latency, callback=callback,
                            finished_callback=finished):
            log.info("mic_started", stream=stream_id, device=device, rate=rate, block=blocksize)
            got = 0
            while not stop.is_set():
                try:
                    item = await asyncio.wait_for(buffer.get(), timeout=0.5)
                except TimeoutError:
                    continue
                if item is None:
                    break
                if isinstance(item, int):
                    pub.skip(item)
                    log.warning("mic_overflow", stream=stream_id, lost_seconds=round(item / rate, 2),
                                buffer_seconds=settings.audio.capture_buffer_seconds)
                    got += item
                else:
                    await pub.push(item)
                    got += len(item)
                if max_seconds is not None and got >= max_seconds * rate:
                    break
        await pub.close()
        if status_flags:
            log.warning("mic_status", flags=sorted(set(status_flags))[:5], count=len(status_flags))
        log.info("mic_stopped", stream=stream_id, frames=pub.sent_frames,
                 lost_seconds=round(pub.skipped_samples / rate, 2))
        return pub.sent_frames


class CaptureBuffer:
    """Blocks from a capture callback, waiting for the event loop, bounded in samples.

    ``put`` never blocks (a PortAudio callback must not): past ``max_samples`` a block is
    dropped and its length queued instead, merged with the drops right before it, so a
    stalled broker costs a bounded amount of memory and the loss stays visible. Used from
    the event loop's thread only (the callback hands blocks over with
    ``call_soon_threadsafe``).
    """

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max(1, max_samples)
        self.buffered = 0
        self.dropped = 0
        self._items: collections.deque[np.ndarray | int | None] = collections.deque()
        self._ready = asyncio.Event()

    def put(self, block: np.ndarray) -> None:
        if self.buffered + len(block) > self.max_samples:
            self.dropped += len(block)
            if self._items and isinstance(self._items[-1], int):
                self._items[-1] += len(block)
            else:
                self._items.append(len(block))
        else:
            self.buffered += len(block)
            self._items.append(block)
        self._ready.set()

    def finish(self) -> None:
        self._items.append(None)
        self._ready.set()

    async def get(self) -> np.ndarray | int | None:
        """The next block, the number of samples dropped there, or None at the end."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, np.ndarray):
            self.buffered -= len(item)
        return item
