"""Checks on one audio-topic record before the pipeline acts on it, and its dead letter.

A producer's input is hostile until checked (docs/monitor.md "Fault tolerance"): every size
it controls is bounded before anything is allocated for it: the record, its frame position
(``start_sample`` beyond what ``seq`` frames can hold) and its sample rate
(``audio.supported_sample_rates``). A record refused here is dead-lettered, never retried.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from streamcover.audio.resample import StreamResampler
from streamcover.config import AudioSettings
from streamcover.events import AudioFrame, DeadLetter, SetListRequest, WireError, decode_any
from streamcover.log import get_logger
from streamcover.monitor.metrics import Metrics
from streamcover.monitor.records import InRecord

log = get_logger(__name__)


@dataclass(frozen=True)
class Rejected:
    """Why a record is dead-lettered: a short stable code and the detail."""

    reason: str
    detail: str


def admit(rec: InRecord, audio: AudioSettings) -> AudioFrame | SetListRequest | Rejected:
    """The record decoded and checked, or why it is refused."""
    if len(rec.value) > audio.max_frame_bytes + 4096:
        return Rejected("oversize", f"record of {len(rec.value)} bytes exceeds audio.max_frame_bytes={audio.max_frame_bytes}")
    try:
        record = decode_any(rec.value)
    except WireError as exc:
        return Rejected(exc.reason, exc.detail)
    key = rec.key.decode("utf-8", "replace") if rec.key is not None else None
    if isinstance(record, SetListRequest):
        return record
    if not isinstance(record, AudioFrame):
        return Rejected("unexpected_type", f"{type(record).__name__} on the audio topic")
    frame = record
    if key is not None and key != frame.stream_id:
        return Rejected("key_mismatch", f"record key {key!r} differs from stream_id {frame.stream_id!r}")
    if frame.sample_rate not in audio.supported_sample_rates:
        return Rejected("unsupported_rate", f"sample rate {frame.sample_rate} Hz is not in "
                        f"audio.supported_sample_rates {list(audio.supported_sample_rates)}")
    # seq frames before this one hold at most seq · max samples: anything beyond is not a
    # hole a producer can have made (and would be a window grid 10^13 samples away).
    most = (frame.seq + 1) * (audio.max_frame_bytes // 2)
    if frame.start_sample > most:
        return Rejected("implausible_position", f"start_sample {frame.start_sample} is beyond "
                        f"what {frame.seq} earlier frames can hold ({most} samples)")
    return frame


def frame_samples(frame: AudioFrame, stream_rate: int, wire_rate: int, metrics: Metrics,
                  replay: bool) -> np.ndarray:
    """The frame's audio, mixed down, cleaned (non-finite samples zeroed, float overs
    clipped) and at the stream's rate; each fix-up is counted."""
    samples = frame.samples() if frame.num_samples else np.zeros(0, dtype=np.float32)
    if frame.channels > 1:
        metrics.frames_converted.labels("mixdown").inc()
    if samples.size:
        bad = ~np.isfinite(samples)
        if bad.any():
            samples[bad] = 0.0
            metrics.frames_converted.labels("non_finite").inc()
            if not replay:
                log.info("non_finite_samples", stream=frame.stream_id, seq=frame.seq, count=int(bad.sum()))
        if frame.sample_format == "float32" and np.abs(samples).max(initial=0.0) > 1.0:
            np.clip(samples, -1.0, 1.0, out=samples)
            metrics.frames_converted.labels("clipped").inc()
    if frame.sample_rate != stream_rate:
        samples = _resample_once(samples, frame.sample_rate, stream_rate)
        metrics.frames_converted.labels("rate_change").inc()
    if frame.sample_rate != wire_rate:
        metrics.frames_converted.labels("resample").inc()
    return samples


def dead_letter(rec: InRecord, reason: str, detail: str, max_message_bytes: int) -> DeadLetter:
    """The dead letter of a record, its original cut to what the broker accepts."""
    limit = max_message_bytes - 65_536
    original = rec.value if len(rec.value) <= limit else rec.value[:limit]
    if len(rec.value) > limit:
        detail += f" (original truncated from {len(rec.value)} bytes)"
    return DeadLetter(
        reason=reason, detail=detail[:2000], topic=rec.topic, partition=rec.partition,
        offset=rec.offset, key=rec.key, original=original, at=time.time(),
    )


def _resample_once(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """A stream changed its rate mid-way: convert this frame on its own (rare, documented)."""
    r = StreamResampler(src, dst)
    y = r.push(np.concatenate([x, np.zeros(64, dtype=np.float32)]))
    n = x.size * dst // src
    return y[:n] if y.size >= n else np.concatenate([y, np.zeros(n - y.size, dtype=np.float32)])
