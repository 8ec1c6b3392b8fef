"""The monitor's processing core, without Kafka: records in, events/dead letters/state out.

:class:`Pipeline.process` takes one poll's worth of raw records (any streams, any
partitions) and returns what must be written *atomically* in one Kafka transaction: match
events, dead letters, stream checkpoints, partition marks and the input offsets to commit.
It runs in the monitor's worker thread, so nothing here touches the event loop.

Per stream (:class:`StreamRuntime`): frames are ordered by :class:`Sequencer`, mixed down,
cleaned, resampled to the front end's rate, turned into feature frames incrementally (each
sample once), cut into windows (``audio.window_seconds`` every ``audio.hop_seconds``), then
windows from *all* streams are embedded in batches; each window is searched with the
stream's accumulated chunks (its horizon) and decided by :class:`StreamMatcher`.

Checkpoints and replay. A stream's state is written in the same transaction as its events,
at every window close and at end of stream. It records where audio must be re-read from
(``resume_offset``): the frame holding the first sample not yet turned into feature frames.
The offset committed for a partition is the smallest such point over its streams, so a
restart re-reads at most ~one window of audio per stream; frames already accounted for are
dropped by sequence number, and records below the partition mark are never acted on twice
(no duplicate dead letters or set lists).

Hostile input (docs/monitor.md "Fault tolerance"). Every size a producer controls is bounded
before it is allocated: frame positions (``start_sample`` beyond what ``seq`` frames can
hold is dead-lettered), holes (silence only up to ``audio.max_gap_seconds``), sample rates
(``audio.supported_sample_rates``). An exception while handling one stream — in its record,
in the batched front end, the batched encoder, the search or the decision — dead-letters
the record (``processing_error``), ends that stream with a final event and drops its later
frames; the batch and the other streams carry on, and the offset moves past the record, so
a replay cannot loop on it.

State lifecycle. A finished stream's checkpoint stays on the state topic until the offset
committed for its partition has passed its last record (until then a restart could re-read
its frames and must drop them); then it is tombstoned. A restored checkpoint that gets no
frame while its partition's records advance ``monitor.idle_evict_seconds`` past it (record
time; wall time once the partition is quiet) is finished, so it no longer holds the
committed offset back. Finished checkpoints read at start-up are kept as three integers.
"""

from __future__ import annotations

import math
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamcover.audio.frontend import FeatureStream, push_many
from streamcover.audio.resample import StreamResampler
from streamcover.config import Settings
from streamcover.events import (
    AudioFrame,
    DeadLetter,
    MatchEvent,
    PartitionMark,
    SetListEntry,
    SetListRequest,
    SourceKind,
    Span,
    StreamState,
    WireError,
    decode_any,
    encode,
    event_id,
)
from streamcover.log import get_logger
from streamcover.match.decision import Decision
from streamcover.match.sequence import Slot
from streamcover.monitor.engine import Engine
from streamcover.monitor.metrics import Metrics
from streamcover.monitor.stream import LAST, AudioBlock, Job, StreamRuntime

log = get_logger(__name__)

MARK_PREFIX = "__mark__"
CLOSED_SEQ = 1 << 62  # next_seq of a stream closed by a fault: all its later frames are dropped


def mark_key(topic: str, partition: int) -> str:
    return f"{MARK_PREFIX}:{topic}:{partition}"


@dataclass(frozen=True)
class InRecord:
    """One consumed Kafka record (what the pipeline needs of it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


@dataclass
class Output:
    """Everything one transaction writes."""

    events: list[MatchEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # (partition, key, value) for the compacted state topic; value None is a tombstone
    states: list[tuple[int, str, bytes | None]] = field(default_factory=list)
    # input partition -> next offset to read after a restart
    offsets: dict[int, int] = field(default_factory=dict)
    windows: int = 0


class Pipeline:
    """All streams of this monitor instance (see module docstring)."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics or Metrics()
        self.streams: dict[str, StreamRuntime] = {}
        self.restored: dict[str, tuple[int, StreamState]] = {}  # unfinished checkpoints only
        self.ended: OrderedDict[str, tuple[int, int]] = OrderedDict()  # stream -> (next_seq, next_sample)
        # Finished streams whose checkpoint is still on the state topic, until the committed
        # offset of their partition passes their last record: stream -> (partition, offset
        # after its last record, next_seq). Then they are tombstoned.
        self.closing: dict[str, tuple[int, int, int]] = {}
        self.marks: dict[int, int] = {}
        self.consumed: dict[int, int] = {}
        # Partition clock for orphaned checkpoints: newest record time (s) and the wall time
        # a record (or the partition's state) last arrived.
        self.clock: dict[int, tuple[float, float]] = {}
        self._rejected: OrderedDict[str, None] = OrderedDict()
        self._batch: Sequence[InRecord] = ()
        # The stream of the record being handled (its frame, if it is one) and partition.
        self._current: tuple[str, AudioFrame | None, int] | None = None
        self._ended_now: set[str] = set()  # streams whose end event this batch emitted

    # ---- partition assignment ------------------------------------------------------------------
    def load_state(self, partition: int, key: str, value: bytes | None) -> None:
        """Feed one record of the state topic (in log order) at assignment time."""
        self.clock.setdefault(partition, (-math.inf, time.time()))
        try:
            record = decode_any(value) if value is not None else None
        except WireError as exc:
            log.warning("state_unreadable", key=key[:200], partition=partition, reason=exc.reason)
            return
        if key.startswith(MARK_PREFIX):
            if isinstance(record, PartitionMark) and record.topic == self.settings.kafka.audio_topic:
                self.marks[record.partition] = record.processed_upto
            return
        if record is None:
            self.restored.pop(key, None)
            self.closing.pop(key, None)
            return
        if not isinstance(record, StreamState):
            return
        if record.finished:  # three integers, not the whole state: there may be many
            self.restored.pop(key, None)
            self.closing[key] = (partition, record.resume_offset, record.resume_seq)
            return
        self.closing.pop(key, None)
        self.restored[key] = (partition, record)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget streams of revoked partitions (their state is in the state topic)."""
        parts = set(partitions)
        for sid in [s for s, rt in self.streams.items() if rt.partition in parts]:
            del self.streams[sid]
        for sid in [s for s, (p, _) in self.restored.items() if p in parts]:
            del self.restored[sid]
        for sid in [s for s, (p, _, _) in self.closing.items() if p in parts]:
            del self.closing[sid]
        for p in parts:
            self.marks.pop(p, None)
            self.consumed.pop(p, None)
            self.clock.pop(p, None)
        self.metrics.active_streams.set(len(self.streams))

    # ---- the batch ---------------------------------------------------------------------------
    def process(self, records: Sequence[InRecord], now: float | None = None) -> Output:
        now = time.time() if now is None else now
        out = Output()
        jobs: list[Job] = []
        touched: dict[str, StreamRuntime] = {}
        self._batch = records
        self._ended_now = set()
        t0 = time.perf_counter()
        for order, rec in enumerate(records):
            self.consumed[rec.partition] = max(self.consumed.get(rec.partition, 0), rec.offset + 1)
            self._tick(rec, now)
            replay = self._replay(rec)
            self._current = None
            try:
                self._record(rec, replay, now, out, jobs, touched, order)
            except Exception as exc:  # one stream's fault must not stop the others
                self._record_fault(rec, replay, exc, now, out, jobs, touched, order)
        self._current = None
        self._sync_features(jobs, out)
        self.metrics.feature_latency.observe(time.perf_counter() - t0)
        self._evict(now, jobs, touched)
        self._evict_orphans(now, jobs, touched, out)
        jobs.sort(key=lambda j: j.order)  # stable: each stream's jobs keep their order
        self._run_jobs(jobs, out, now)
        # Checkpoint exactly the streams that decided something (a window or an end): their
        # state must move together with their events; the others keep their replay point.
        decided = {j.stream.stream_id: j.stream for j in jobs}
        for rt in decided.values():
            if rt.stream_id in self.streams or rt.finished:
                out.states.append((rt.partition, rt.stream_id, self._state_of(rt, out, now)))
            if rt.finished:
                self._close(rt)
        for p, upto in self.consumed.items():
            mark = PartitionMark(topic=self.settings.kafka.audio_topic, partition=p,
                                 processed_upto=max(upto, self.marks.get(p, 0)), updated_at=now)
            self.marks[p] = mark.processed_upto
            out.states.append((p, mark_key(self.settings.kafka.audio_topic, p), encode(mark)))
        out.offsets = self.commit_offsets()
        self._tombstone(out)
        self._batch = ()
        self.metrics.active_streams.set(len(self.streams))
        return out

    def commit_offsets(self) -> dict[int, int]:
        offsets = dict(self.consumed)
        for rt in self.streams.values():
            if rt.partition in offsets:
                offsets[rt.partition] = min(offsets[rt.partition], rt.low_water)
        for p, st in self.restored.values():
            if p in offsets and not st.finished:
                offsets[p] = min(offsets[p], st.resume_offset)
        return offsets

    def _replay(self, rec: InRecord) -> bool:
        return rec.offset < self.marks.get(rec.partition, 0)

    def _tick(self, rec: InRecord, now: float) -> None:
        """Advance the partition's record clock (a producer's timestamp counts up to now)."""
        newest, _ = self.clock.get(rec.partition, (-math.inf, now))
        ts = rec.timestamp_ms / 1000.0
        if ts > 0:
            newest = max(newest, min(ts, now))
        self.clock[rec.partition] = (newest, now)

    def _progress(self, partition: int, now: float) -> float:
        """How far the partition has got in time: its newest record's time, or the wall
        clock once no record has come for ``idle_evict_seconds`` (it is caught up)."""
        newest, since = self.clock.get(partition, (-math.inf, now))
        if now - since >= self.settings.monitor.idle_evict_seconds:
            return max(newest, now)
        return newest

    def _close(self, rt: StreamRuntime) -> None:
        """A finished stream leaves memory; its checkpoint waits for its tombstone."""
        self.streams.pop(rt.stream_id, None)
        next_seq = CLOSED_SEQ if rt.failed else rt.seq.next_seq
        self._remember_end(rt.stream_id, next_seq, rt.seq.next_sample)
        self.closing[rt.stream_id] = (rt.partition, max(rt.last_offset + 1, rt.low_water), next_seq)

    def _tombstone(self, out: Output) -> None:
        """Delete the checkpoints of finished streams no restart can re-read a frame of."""
        if not self.closing or not out.offsets:
            return
        for sid, (p, end, next_seq) in list(self.closing.items()):
            if out.offsets.get(p, -1) >= end:
                out.states.append((p, sid, None))
                del self.closing[sid]
                self._remember_end(sid, next_seq, 0)  # stray frames after it are still dropped

    def _remember_end(self, sid: str, next_seq: int, next_sample: int) -> None:
        self.ended[sid] = (next_seq, next_sample)
        self.ended.move_to_end(sid)
        while len(self.ended) > 10 * self.settings.monitor.max_streams:
            self.ended.popitem(last=False)

    def _end_seq(self, sid: str) -> int | None:
        """next_seq of a finished stream, if this instance still knows it ended."""
        if sid in self.closing:
            return self.closing[sid][2]
        return self.ended[sid][0] if sid in self.ended else None

    def _dead(self, out: Output, rec: InRecord, reason: str, detail: str, replay: bool) -> None:
        if replay:
            return
        limit = self.settings.kafka.max_message_bytes - 65_536
        original = rec.value if len(rec.value) <= limit else rec.value[:limit]
        if len(rec.value) > limit:
            detail += f" (original truncated from {len(rec.value)} bytes)"
        out.dead_letters.append(DeadLetter(
            reason=reason, detail=detail[:2000], topic=rec.topic, partition=rec.partition,
            offset=rec.offset, key=rec.key, original=original, at=time.time(),
        ))
        self.metrics.dlq.labels(reason).inc()
        log.warning("dead_letter", reason=reason, detail=detail[:300], partition=rec.partition, offset=rec.offset)

    # ---- faults ----------------------------------------------------------------------------------
    def _fault(self, rt: StreamRuntime | None, rec: InRecord | None, phase: str, exc: BaseException,
               out: Output, sid: str | None = None) -> None:
        """Dead-letter the record a fault came from and mark its stream failed; the caller
        ends the stream. The traceback goes to the log, the reason to the dead letter."""
        sid = rt.stream_id if rt is not None else sid
        detail = f"{phase}: {type(exc).__name__}: {exc}"
        log.error("stream_fault", stream=sid, phase=phase, error=detail[:500],
                  where=traceback.format_exc(limit=-3)[-1500:])
        if rec is not None:
            self._dead(out, rec, "processing_error", detail, self._replay(rec))
        if rt is not None:
            rt.failed = True
            rt.pending, rt.pending_samples = [], 0

    def _close_job(self, rt: StreamRuntime, jobs: list[Job], order: int, closed_at: float) -> None:
        """End a failed stream after the windows it completed so far (no more features)."""
        if rt.finished:
            return  # its end job is already queued
        try:
            end = max(rt.frame_time(rt.frames_done), rt.seq.next_sample / rt.sample_rate)
        except Exception:
            end = 0.0
        end = end if math.isfinite(end) else 0.0
        jobs.append(Job(rt, rt.next_window, end, end, None, closed_at, finish_at=end, order=order))
        rt.finished = True

    def _record_fault(self, rec: InRecord, replay: bool, exc: Exception, now: float, out: Output,
                      jobs: list[Job], touched: dict[str, StreamRuntime], order: int) -> None:
        current = self._current
        rt = self.streams.get(current[0]) if current is not None else None
        self._fault(rt, rec, "record", exc, out, sid=current[0] if current else None)
        if rt is not None:
            self._close_job(rt, jobs, order, now)
            touched[rt.stream_id] = rt
        elif current is not None and (frame := current[1]) is not None:  # no runtime yet (its restore)
            sid, _, partition = current
            self._close_unopened(sid, frame.source, frame.title, frame.sample_rate, partition,
                                 rec.offset + 1, 0, out, now)

    def _close_unopened(self, sid: str, source: SourceKind, title: str | None, rate: int,
                        partition: int, end_offset: int, index: int, out: Output, now: float) -> None:
        """End a stream that has no runtime: an aborted final and a closed checkpoint."""
        out.events.append(self._event(_aborted(sid, source, index, 0.0), now, None))
        st = _closed_state(sid, source, title, rate, end_offset, self.engine.model_id,
                           self.engine.catalog_version)
        out.states.append((partition, sid, encode(st)))
        self._remember_end(sid, CLOSED_SEQ, 0)
        self.closing[sid] = (partition, end_offset, CLOSED_SEQ)

    def _state_of(self, rt: StreamRuntime, out: Output, now: float) -> bytes:
        """The stream's checkpoint; a failed stream's is a closed one (its buffers are not
        trusted), which drops all its later frames, also after a restart."""
        if not rt.failed:
            try:
                return encode(rt.checkpoint(self.engine.model_id, self.engine.catalog_version))
            except Exception as exc:
                self._fault(rt, None, "checkpoint", exc, out)
                if rt.stream_id not in self._ended_now:
                    out.events.append(self._event(_aborted(rt.stream_id, rt.source, rt.next_window, 0.0),
                                                  now, None))
                rt.finished = True
        end = max(rt.last_offset + 1, rt.low_water)
        rt.low_water = end
        return encode(_closed_state(rt.stream_id, rt.source, rt.title, rt.sample_rate, end,
                                    self.engine.model_id, self.engine.catalog_version))

    # ---- records ---------------------------------------------------------------------------------
    def _record(self, rec: InRecord, replay: bool, now: float, out: Output, jobs: list[Job],
                touched: dict[str, StreamRuntime], order: int = 0) -> None:
        s = self.settings
        self.metrics.frames_in.inc()
        if len(rec.value) > s.audio.max_frame_bytes + 4096:
            self._dead(out, rec, "oversize", f"record of {len(rec.value)} bytes exceeds audio.max_frame_bytes={s.audio.max_frame_bytes}", replay)
            return
        try:
            record = decode_any(rec.value)
        except WireError as exc:
            self._dead(out, rec, exc.reason, exc.detail, replay)
            return
        key = rec.key.decode("utf-8", "replace") if rec.key is not None else None
        if isinstance(record, SetListRequest):
            if replay:
                return
            self._current = (record.stream_id, None, rec.partition)
            rt = self.streams.get(record.stream_id)
            if rt is None and record.stream_id in self.restored:
                rt = self._restore(record.stream_id)
            if rt is None or rt.finished:
                self._dead(out, rec, "unknown_stream", f"no open stream {record.stream_id!r} here", replay)
                return
            rt.sync(jobs)  # windows completed before the request count, as on arrival
            d = rt.matcher.setlist(rt.next_window, tag=f"request:{record.request_id}")
            out.events.append(self._event(d, now, None))
            return
        if not isinstance(record, AudioFrame):
            self._dead(out, rec, "unexpected_type", f"{type(record).__name__} on the audio topic", replay)
            return
        frame = record
        if key is not None and key != frame.stream_id:
            self._dead(out, rec, "key_mismatch", f"record key {key!r} differs from stream_id {frame.stream_id!r}", replay)
            return
        if frame.sample_rate not in s.audio.supported_sample_rates:
            self._dead(out, rec, "unsupported_rate", f"sample rate {frame.sample_rate} Hz is not in "
                       f"audio.supported_sample_rates {list(s.audio.supported_sample_rates)}", replay)
            return
        # seq frames before this one hold at most seq · max samples: anything beyond is not a
        # hole a producer can have made (and would be a window grid 10^13 samples away).
        most = (frame.seq + 1) * (s.audio.max_frame_bytes // 2)
        if frame.start_sample > most:
            self._dead(out, rec, "implausible_position", f"start_sample {frame.start_sample} is beyond "
                       f"what {frame.seq} earlier frames can hold ({most} samples)", replay)
            return
        self._current = (frame.stream_id, frame, rec.partition)
        rt = self._stream_for(frame, rec, replay, out)
        if rt is None:
            return
        rt.last_active = time.monotonic()
        rt.last_offset = max(rt.last_offset, rec.offset)
        samples = frame.samples() if frame.num_samples else np.zeros(0, dtype=np.float32)
        if frame.channels > 1:
            self.metrics.frames_converted.labels("mixdown").inc()
        if samples.size:
            bad = ~np.isfinite(samples)
            if bad.any():
                samples[bad] = 0.0
                self.metrics.frames_converted.labels("non_finite").inc()
                if not replay:
                    log.info("non_finite_samples", stream=frame.stream_id, seq=frame.seq, count=int(bad.sum()))
            if frame.sample_format == "float32" and np.abs(samples).max(initial=0.0) > 1.0:
                np.clip(samples, -1.0, 1.0, out=samples)
                self.metrics.frames_converted.labels("clipped").inc()
        if frame.sample_rate != rt.sample_rate:
            samples = _resample_once(samples, frame.sample_rate, rt.sample_rate)
            self.metrics.frames_converted.labels("rate_change").inc()
        if frame.sample_rate != s.audio.wire_sample_rate:
            self.metrics.frames_converted.labels("resample").inc()
        closed_at = frame.sent_at if math.isfinite(frame.sent_at) and 0 < frame.sent_at <= now + 5 else now
        audio = AudioBlock(samples, rec.offset, closed_at, frame.eos, order)
        slot = Slot(frame.seq, frame.start_sample, int(samples.size), audio)
        actions = rt.seq.push(slot)
        if frame.eos:
            actions += rt.seq.flush()
        for a in actions:
            if a.kind == "drop":
                self.metrics.frames_dropped.labels("replayed" if replay else a.reason).inc()
                continue
            assert a.slot is not None
            if a.kind == "silence":
                rt.feed(np.zeros(a.samples, dtype=np.float32), a.slot.start_sample - a.samples,
                        a.slot.item.closed_at, order)
                self.metrics.frames_converted.labels("gap_silence").inc()
                continue
            if a.kind == "discontinuity":
                self.metrics.frames_dropped.labels("gap_restart").inc()
                rt.discontinuity(a.slot.start_sample, jobs)
                continue
            item = a.slot.item
            rt.recent.append((item.offset, a.slot.seq, a.slot.start_sample, a.slot.num_samples))
            rt.feed(item.samples, a.slot.start_sample, item.closed_at, order)
            touched[rt.stream_id] = rt
            if item.eos and not rt.finished:
                rt.finish(item.closed_at, jobs, order)

    # ---- features ----------------------------------------------------------------------------------
    def _sync_features(self, jobs: list[Job], out: Output) -> None:
        """Features of every stream with pending audio in one batched front-end call
        (``push_many``: one FFT/peak-picking pass over the frames of all streams). If the
        batch raises, each stream is retried alone from its state before the batch, so only
        a stream that fails on its own is ended."""
        due: list[StreamRuntime] = []
        blocks: list[np.ndarray] = []
        for rt in self.streams.values():
            block = rt.take_pending()
            if block is not None:
                due.append(rt)
                blocks.append(block)
        if not due:
            return
        snaps = [_snapshot(rt.fstream) for rt in due]
        last = [rt.pending[-1][3] for rt in due]  # the newest record of each stream's audio
        new: list[np.ndarray | None]
        try:
            new = list(_features(due, blocks))
        except Exception:
            new = []
            for rt, block, snap, order in zip(due, blocks, snaps, last, strict=True):
                _restore_snapshot(rt.fstream, snap)
                try:
                    new.append(_features([rt], [block])[0])
                except Exception as exc:
                    _restore_snapshot(rt.fstream, snap)
                    new.append(None)
                    self._feature_fault(rt, order, "features", exc, jobs, out)
        for rt, feats, order in zip(due, new, last, strict=True):
            if feats is None:
                continue
            try:
                rt.absorb(np.asarray(feats, dtype=np.float32), jobs)
            except Exception as exc:
                self._feature_fault(rt, order, "windows", exc, jobs, out)

    def _feature_fault(self, rt: StreamRuntime, order: int, phase: str, exc: Exception,
                       jobs: list[Job], out: Output) -> None:
        self._fault(rt, self._rec_at(order), phase, exc, out)
        self._close_job(rt, jobs, order, time.time())

    def _rec_at(self, order: int) -> InRecord | None:
        return self._batch[order] if 0 <= order < len(self._batch) else None

    def _restore(self, sid: str) -> StreamRuntime | None:
        partition, st = self.restored.pop(sid)
        if st.finished:
            self._remember_end(sid, st.resume_seq, st.resume_sample)
            return None
        rt = StreamRuntime.restore(st, partition, self.settings, self.engine)
        self.streams[sid] = rt
        self.metrics.restored.inc()
        log.info("stream_restored", stream=sid, partition=partition, windows=st.next_window,
                 resume_offset=st.resume_offset)
        return rt

    def _stream_for(self, frame: AudioFrame, rec: InRecord, replay: bool, out: Output) -> StreamRuntime | None:
        sid = frame.stream_id
        rt = self.streams.get(sid)
        if rt is not None:
            if rt.finished:  # ended earlier in this batch
                self.metrics.frames_dropped.labels("replayed" if replay else "after_end").inc()
                return None
            return rt
        if sid in self.restored:
            rt = self._restore(sid)
            if rt is not None:
                return rt
        next_seq = self._end_seq(sid)
        if next_seq is not None:
            if frame.seq < next_seq:
                self.metrics.frames_dropped.labels("replayed" if replay else "after_end").inc()
                return None
            self.ended.pop(sid, None)
            self.closing.pop(sid, None)
        if len(self.streams) >= self.settings.monitor.max_streams:
            self.metrics.stream_cap_hit.set(1)
            self.metrics.frames_dropped.labels("stream_cap").inc()
            if sid not in self._rejected and not replay:
                self.metrics.streams_rejected.inc()
                log.warning("stream_cap_reached", stream=sid, max_streams=self.settings.monitor.max_streams)
                self._rejected[sid] = None
                while len(self._rejected) > 10_000:
                    self._rejected.popitem(last=False)
            return None
        self.metrics.stream_cap_hit.set(0)
        rt = StreamRuntime(sid, frame.source, rec.partition, frame.sample_rate, self.settings, self.engine,
                           frame.seq, frame.start_sample, rec.offset, frame.title)
        self.streams[sid] = rt
        log.info("stream_open", stream=sid, source=frame.source, partition=rec.partition,
                 sample_rate=frame.sample_rate)
        return rt

    def _evict(self, now: float, jobs: list[Job], touched: dict[str, StreamRuntime]) -> None:
        limit = time.monotonic() - self.settings.monitor.idle_evict_seconds
        for sid, rt in list(self.streams.items()):
            if rt.last_active < limit and not rt.finished:
                log.info("stream_evicted", stream=sid, idle_s=self.settings.monitor.idle_evict_seconds)
                self.metrics.evicted.inc()
                try:
                    rt.finish(now, jobs)
                except Exception as exc:
                    self._fault(rt, None, "evict", exc, Output())
                    self._close_job(rt, jobs, LAST, now)
                touched[sid] = rt

    def _evict_orphans(self, now: float, jobs: list[Job], touched: dict[str, StreamRuntime],
                       out: Output) -> None:
        """Finish restored checkpoints whose stream sent nothing while its partition moved
        ``idle_evict_seconds`` past the checkpoint: they would hold its offset forever."""
        idle = self.settings.monitor.idle_evict_seconds
        for sid, (p, st) in list(self.restored.items()):
            if self._progress(p, now) - st.updated_at <= idle:
                continue
            log.info("checkpoint_orphaned", stream=sid, partition=p, resume_offset=st.resume_offset,
                     idle_s=idle)
            self.metrics.evicted.inc()
            try:
                rt = self._restore(sid)
            except Exception as exc:
                self._fault(None, None, "restore", exc, out, sid=sid)
                self._close_unopened(sid, st.source, st.title, st.sample_rate, p, st.resume_offset,
                                     st.next_window, out, now)
                continue
            if rt is None:
                continue
            try:
                rt.finish(now, jobs)
            except Exception as exc:
                self._fault(rt, None, "evict", exc, out)
                self._close_job(rt, jobs, LAST, now)
            touched[sid] = rt

    # ---- embedding, search, decisions ---------------------------------------------------------
    def _embed(self, jobs: list[Job]) -> tuple[dict[int, np.ndarray], dict[int, Exception]]:
        """Embeddings of the window jobs, batched across streams by chunk length; a batch
        that raises is retried job by job, and the jobs that still fail are returned."""
        vectors: dict[int, np.ndarray] = {}
        failed: dict[int, Exception] = {}
        bs = self.settings.encoder.batch_size
        by_len: dict[int, list[int]] = {}
        for i, j in enumerate(jobs):
            if j.chunk is not None:
                by_len.setdefault(j.chunk.shape[1], []).append(i)
        for ids in by_len.values():
            for b in range(0, len(ids), bs):
                part = ids[b : b + bs]
                try:
                    emb = self._embed_batch([jobs[i] for i in part])
                except Exception:
                    for i in part:
                        try:
                            vectors[i] = self._embed_batch([jobs[i]])[0]
                        except Exception as exc:
                            failed[i] = exc
                    continue
                for i, v in zip(part, emb, strict=True):
                    vectors[i] = v
        return vectors, failed

    def _embed_batch(self, part: list[Job]) -> np.ndarray:
        batch = np.stack([j.chunk for j in part])  # type: ignore[misc]
        t0 = time.perf_counter()
        emb = np.asarray(self.engine.encoder.embed_chunks(batch), dtype=np.float32)
        self.metrics.embed_latency.observe(time.perf_counter() - t0)
        self.metrics.batch_size.observe(len(part))
        if emb.shape[0] != len(part) or not np.isfinite(emb).all():
            raise ValueError(f"encoder returned {emb.shape} / non-finite values for {len(part)} windows")
        return emb

    def _run_jobs(self, jobs: list[Job], out: Output, now: float) -> None:
        windows = [j for j in jobs if j.chunk is not None]
        vectors, failed = self._embed(jobs)
        self.metrics.windows.inc(len(windows))
        out.windows += len(windows)
        broken: set[str] = set()
        for i, j in enumerate(jobs):
            rt = j.stream
            if rt.stream_id in broken:
                continue
            try:
                if i in failed:
                    raise failed[i]
                self._decide(j, vectors.get(i), out, now)
            except Exception as exc:
                broken.add(rt.stream_id)
                phase = "embed" if i in failed else ("finish" if j.chunk is None else "search/decision")
                self._fault(rt, self._rec_at(j.order), phase, exc, out)
                self._finish_now(rt, j, out, now)

    def _decide(self, j: Job, vector: np.ndarray | None, out: Output, now: float) -> None:
        rt = j.stream
        if j.chunk is None:
            for d in rt.matcher.finish(j.finish_at or j.end, j.index):
                out.events.append(self._event(d, now, j.closed_at))
            self._ended_now.add(rt.stream_id)
            return
        assert vector is not None
        rt.embeddings[j.index] = vector
        rt.chunk_start[j.index] = j.start
        rt.matcher.add_chunk(j.index, j.start, j.end)
        q = rt.matcher.query_indices()
        for old in [k for k in rt.embeddings if k < q[0]]:
            del rt.embeddings[old]
            rt.chunk_start.pop(old, None)
        qv = np.stack([rt.embeddings[k] for k in q])
        qs = np.array([rt.chunk_start[k] for k in q], dtype=np.float64)
        t0 = time.perf_counter()
        hits = self.engine.searcher.search(qv, qs, chunk_ids=list(q), memo=rt.stage1_memo,
                                           query_features=rt.query_features())
        self.metrics.search_latency.observe(time.perf_counter() - t0)
        for d in rt.matcher.on_window(j.index, j.start, j.end, hits):
            out.events.append(self._event(d, now, j.closed_at))

    def _finish_now(self, rt: StreamRuntime, j: Job, out: Output, now: float) -> None:
        """A stream failed while deciding: its end event now (the matcher's verdict so far,
        or an aborted final if the matcher itself cannot give one)."""
        rt.finished = True
        if rt.stream_id in self._ended_now:
            return
        end = j.finish_at if j.finish_at is not None else j.end
        try:
            events = [self._event(d, now, j.closed_at) for d in rt.matcher.finish(end, rt.next_window)]
        except Exception:
            events = []
        if not events:
            events = [self._event(_aborted(rt.stream_id, rt.source, rt.next_window, end), now, None)]
        out.events.extend(events)
        self._ended_now.add(rt.stream_id)

    def _event(self, d: Decision, now: float, closed_at: float | None) -> MatchEvent:
        emitted = time.time()
        latency = max(0.0, (emitted - closed_at) * 1000.0) if closed_at is not None else 0.0
        if closed_at is not None:
            self.metrics.event_latency.observe(latency / 1000.0)
        self.metrics.events_out.labels(d.kind).inc()
        m = self.settings.match
        live = d.source == "live"
        fa, floor = None, False
        cal = self.engine.calibration
        if cal is not None and not live and d.reference_id is not None:
            curve = cal.for_chunks(d.chunks_used)
            fa, floor = curve.false_alarms_per_hour(d.score), curve.at_floor(d.score)
        return MatchEvent(
            event_id=d.event_id, kind=d.kind, stream_id=d.stream_id, source=d.source,
            reference_id=d.reference_id, reference=d.reference, score=_finite(d.score),
            threshold=m.live_threshold if live else m.threshold, chunks_used=d.chunks_used,
            false_alarms_per_hour=fa, false_alarms_at_floor=floor, maxmean=d.maxmean,
            alignment_score=d.alignment_score, setlist_omitted=d.setlist_omitted,
            stream_span=Span(start=max(0.0, d.stream_span[0]), end=max(0.0, d.stream_span[1])),
            reference_span=(Span(start=max(0.0, d.reference_span[0]), end=max(0.0, d.reference_span[1]))
                            if d.reference_span else None),
            model_id=self.engine.model_id, catalog_version=self.engine.catalog_version,
            latency_ms=latency, emitted_at=emitted,
            setlist=[SetListEntry(reference_id=i.reference_id, title=i.reference.get("title"),
                                  artist=i.reference.get("artist"),
                                  stream_span=Span(start=max(0.0, i.start), end=max(0.0, i.end)),
                                  score=_finite(i.score)) for i in d.setlist],
        )


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _resample_once(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """A stream changed its rate mid-way: convert this frame on its own (rare, documented)."""
    r = StreamResampler(src, dst)
    y = r.push(np.concatenate([x, np.zeros(64, dtype=np.float32)]))
    n = x.size * dst // src
    return y[:n] if y.size >= n else np.concatenate([y, np.zeros(n - y.size, dtype=np.float32)])


def _features(due: Sequence[StreamRuntime], blocks: Sequence[np.ndarray]) -> list[np.ndarray]:
    if all(isinstance(rt.fstream, FeatureStream) for rt in due):
        return push_many([rt.fstream for rt in due], blocks)
    return [rt.fstream.push(b) for rt, b in zip(due, blocks, strict=True)]  # no batched path


def _snapshot(obj: Any) -> dict[str, Any]:
    """The attributes of a feature stream, with its buffers copied, so that a failed
    batched push can be undone and the stream retried on its own."""
    return {k: (v.copy() if isinstance(v, np.ndarray | list) else v) for k, v in vars(obj).items()}


def _restore_snapshot(obj: Any, snap: dict[str, Any]) -> None:
    state = vars(obj)
    state.clear()
    state.update({k: (v.copy() if isinstance(v, np.ndarray | list) else v) for k, v in snap.items()})


def _aborted(sid: str, source: SourceKind, index: int, end: float) -> Decision:
    """The end event of a stream that a fault closed before it had a verdict."""
    return Decision(
        kind="final", event_id=event_id(sid, "final", "aborted", index), stream_id=sid, source=source,
        reference_id=None, reference={}, score=0.0, chunks_used=0,
        stream_span=(0.0, max(end, 0.0) if math.isfinite(end) else 0.0), reference_span=None,
        window_index=index,
    )


def _closed_state(sid: str, source: SourceKind, title: str | None, rate: int, end_offset: int,
                  model_id: str, catalog_version: str) -> StreamState:
    """The checkpoint of a stream closed by a fault: finished, every later seq dropped."""
    return StreamState(
        stream_id=sid, source=source, title=title, finished=True, sample_rate=rate,
        resume_seq=CLOSED_SEQ, resume_sample=0, resume_offset=max(0, end_offset),
        grid_origin_sample=0, frames_done=0, win_start=0, epoch_windows=0, last_end=0,
        next_window=0, feature_bins=0, embed_dim=0, model_id=model_id,
        catalog_version=catalog_version, updated_at=time.time(),
    )
