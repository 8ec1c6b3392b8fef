"""The monitor's processing core, without Kafka: records in, events/dead letters/state out.

The orchestration alone (its parts are the sibling modules named below); just past ~450
lines because the per-record fault handling reads best in one place.

:class:`Pipeline.process` takes one poll's worth of raw records (any streams, any
partitions) and returns what must be written *atomically* in one Kafka transaction: match
events, dead letters, stream checkpoints, partition marks and the input offsets to commit.
It runs in the monitor's worker thread, so nothing here touches the event loop.

Per stream (:class:`StreamRuntime`): frames are ordered by :class:`Sequencer`, mixed down,
cleaned, resampled to the front end's rate, turned into feature frames incrementally (each
sample once), cut into windows (``audio.window_seconds`` every ``audio.hop_seconds``), then
windows from *all* streams are embedded in batches; each window is searched with the
stream's accumulated chunks (its horizon) and decided by :class:`StreamMatcher`.

This module orchestrates; the parts are beside it: the types in and out
(``monitor.records``), record checks and dead letters (``monitor.intake``), checkpoints,
replay and tombstones (``monitor.checkpoints``), the batched front end and encoder
(``monitor.batching``) and the events (``monitor.match_events``); ``monitor.profile`` times
the stages for the benchmark (off unless ``STREAMCOVER_MONITOR_PROFILE`` is set).

Hostile input (docs/monitor.md "Fault tolerance"). Every size a producer controls is bounded
before it is allocated (``monitor.intake``); holes become silence only up to
``audio.max_gap_seconds``. An exception while handling one stream — in its record,
in the batched front end, the batched encoder, the search or the decision — dead-letters
the record (``processing_error``), ends that stream with a final event and drops its later
frames; the batch and the other streams carry on, and the offset moves past the record, so
a replay cannot loop on it.
"""

from __future__ import annotations

import math
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np

from streamcover.config import Settings
from streamcover.events import (
    AudioFrame,
    MatchEvent,
    SetListRequest,
    SourceKind,
    StreamState,
    encode,
)
from streamcover.log import get_logger
from streamcover.match.decision import Decision
from streamcover.match.sequence import Slot
from streamcover.monitor.batching import embed, sync_features
from streamcover.monitor.checkpoints import Checkpoints, closed_state
from streamcover.monitor.engine import Engine
from streamcover.monitor.intake import Rejected, admit, dead_letter, frame_samples
from streamcover.monitor.match_events import aborted, match_event
from streamcover.monitor.metrics import Metrics
from streamcover.monitor.records import InRecord, Output
from streamcover.monitor.stream import LAST, AudioBlock, Job, StreamRuntime

__all__ = ["InRecord", "Output", "Pipeline"]

log = get_logger(__name__)


class Pipeline:
    """All streams of this monitor instance (see module docstring)."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics or Metrics()
        self.streams: dict[str, StreamRuntime] = {}
        self.checkpoints = Checkpoints(settings)
        self._rejected: OrderedDict[str, None] = OrderedDict()
        self._batch: Sequence[InRecord] = ()
        # The stream of the record being handled (its frame, if it is one) and partition.
        self._current: tuple[str, AudioFrame | None, int] | None = None
        self._ended_now: set[str] = set()  # streams whose end event this batch emitted
        # Stage timers (off unless the benchmark asks: streamcover.monitor.profile).
        self.profile = self.metrics.profile
        self.profile.instrument_searcher(engine.searcher)

    @property
    def restored(self) -> dict[str, tuple[int, StreamState]]:
        """Unfinished checkpoints read at assignment that no frame has resumed yet."""
        return self.checkpoints.restored

    @property
    def closing(self) -> dict[str, tuple[int, int, int]]:
        """Finished streams whose checkpoint waits for its tombstone."""
        return self.checkpoints.closing

    # ---- partition assignment ------------------------------------------------------------------
    def load_state(self, partition: int, key: str, value: bytes | None) -> None:
        """Feed one record of the state topic (in log order) at assignment time; one that
        cannot be decoded is skipped with a warning, so callers need not guard it."""
        self.checkpoints.load(partition, key, value)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget streams of revoked partitions (their state is in the state topic)."""
        parts = set(partitions)
        for sid in [s for s, rt in self.streams.items() if rt.partition in parts]:
            del self.streams[sid]
        self.checkpoints.drop(parts)
        self.metrics.active_streams.set(len(self.streams))

    # ---- the batch ---------------------------------------------------------------------------
    def process(self, records: Sequence[InRecord], now: float | None = None) -> Output:
        prof = self.profile
        if not prof.enabled:
            return self._process(records, now)
        prof.batch_start(len(records), min((r.timestamp_ms for r in records if r.timestamp_ms > 0),
                                           default=None))
        with prof.stage("pipeline_other"):
            out = self._process(records, now)
        prof.batch_end(out.windows)
        return out

    def _process(self, records: Sequence[InRecord], now: float | None) -> Output:
        now = time.time() if now is None else now
        out = Output()
        jobs: list[Job] = []
        touched: dict[str, StreamRuntime] = {}
        self._batch = records
        self._ended_now = set()
        t0 = time.perf_counter()
        for order, rec in enumerate(records):
            replay = self.checkpoints.consume(rec, now)
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
                with self.profile.stage("checkpoint"):
                    out.states.append((rt.partition, rt.stream_id, self._state_of(rt, out, now)))
            if rt.finished:
                self._close(rt)
        self.checkpoints.write_marks(out, now)
        out.offsets = self.commit_offsets()
        self.checkpoints.tombstone(out)
        self._batch = ()
        self.metrics.active_streams.set(len(self.streams))
        return out

    def commit_offsets(self) -> dict[int, int]:
        return self.checkpoints.commit_offsets(self.streams.values())

    def _close(self, rt: StreamRuntime) -> None:
        """A finished stream leaves memory; its checkpoint waits for its tombstone."""
        self.streams.pop(rt.stream_id, None)
        self.checkpoints.close(rt)

    def _dead(self, out: Output, rec: InRecord, reason: str, detail: str, replay: bool) -> None:
        if replay:
            return
        letter = dead_letter(rec, reason, detail, self.settings.kafka.max_message_bytes)
        out.dead_letters.append(letter)
        self.metrics.dlq.labels(reason).inc()
        log.warning("dead_letter", reason=reason, detail=letter.detail[:300], partition=rec.partition,
                    offset=rec.offset)

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
            self._dead(out, rec, "processing_error", detail, self.checkpoints.replay(rec))
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
        out.events.append(self._event(aborted(sid, source, index, 0.0), now, None))
        st = closed_state(sid, source, title, rate, end_offset, self.engine.model_id,
                          self.engine.catalog_version)
        out.states.append((partition, sid, encode(st)))
        self.checkpoints.close_unopened(sid, partition, end_offset)

    def _state_of(self, rt: StreamRuntime, out: Output, now: float) -> bytes:
        """The stream's checkpoint; a failed stream's is a closed one (its buffers are not
        trusted), which drops all its later frames, also after a restart."""
        if not rt.failed:
            try:
                return encode(rt.checkpoint(self.engine.model_id, self.engine.catalog_version))
            except Exception as exc:
                self._fault(rt, None, "checkpoint", exc, out)
                if rt.stream_id not in self._ended_now:
                    out.events.append(self._event(aborted(rt.stream_id, rt.source, rt.next_window, 0.0),
                                                  now, None))
                rt.finished = True
        end = max(rt.last_offset + 1, rt.low_water)
        rt.low_water = end
        return encode(closed_state(rt.stream_id, rt.source, rt.title, rt.sample_rate, end,
                                   self.engine.model_id, self.engine.catalog_version))

    # ---- records ---------------------------------------------------------------------------------
    def _record(self, rec: InRecord, replay: bool, now: float, out: Output, jobs: list[Job],
                touched: dict[str, StreamRuntime], order: int = 0) -> None:
        s = self.settings
        self.metrics.frames_in.inc()
        with self.profile.stage("decode"):
            record = admit(rec, s.audio)
        if isinstance(record, Rejected):
            self._dead(out, rec, record.reason, record.detail, replay)
            return
        if isinstance(record, SetListRequest):
            self._setlist(record, rec, replay, now, out, jobs)
            return
        frame = record
        self._current = (frame.stream_id, frame, rec.partition)
        rt = self._stream_for(frame, rec, replay, out)
        if rt is None:
            return
        rt.last_active = time.monotonic()
        rt.last_offset = max(rt.last_offset, rec.offset)
        with self.profile.stage("decode"):
            samples = frame_samples(frame, rt.sample_rate, s.audio.wire_sample_rate, self.metrics, replay)
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
                with self.profile.stage("resample"):
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
            with self.profile.stage("resample"):
                rt.feed(item.samples, a.slot.start_sample, item.closed_at, order)
            touched[rt.stream_id] = rt
            if item.eos and not rt.finished:
                rt.finish(item.closed_at, jobs, order)

    def _setlist(self, request: SetListRequest, rec: InRecord, replay: bool, now: float,
                 out: Output, jobs: list[Job]) -> None:
        """A set list asked for an open stream: the matcher's, up to the windows so far."""
        if replay:
            return
        self._current = (request.stream_id, None, rec.partition)
        rt = self.streams.get(request.stream_id)
        if rt is None and request.stream_id in self.restored:
            rt = self._restore(request.stream_id)
        if rt is None or rt.finished:
            self._dead(out, rec, "unknown_stream", f"no open stream {request.stream_id!r} here", replay)
            return
        rt.sync(jobs)  # windows completed before the request count, as on arrival
        d = rt.matcher.setlist(rt.next_window, tag=f"request:{request.request_id}")
        out.events.append(self._event(d, now, None))

    def _restore(self, sid: str) -> StreamRuntime | None:
        partition, st = self.restored.pop(sid)
        if st.finished:
            self.checkpoints.remember_end(sid, st.resume_seq, st.resume_sample)
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
        next_seq = self.checkpoints.end_seq(sid)
        if next_seq is not None:
            if frame.seq < next_seq:
                self.metrics.frames_dropped.labels("replayed" if replay else "after_end").inc()
                return None
            self.checkpoints.reopen(sid)
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
            if self.checkpoints.progress(p, now) - st.updated_at <= idle:
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

    # ---- features, embedding, search, decisions -----------------------------------------------
    def _sync_features(self, jobs: list[Job], out: Output) -> None:
        """All streams' pending audio through the batched front end; a stream whose
        features or windows fail is ended on its own."""

        def fault(rt: StreamRuntime, order: int, phase: str, exc: Exception) -> None:
            self._fault(rt, self._rec_at(order), phase, exc, out)
            self._close_job(rt, jobs, order, time.time())

        sync_features(self.streams.values(), jobs, fault, self.profile)

    def _rec_at(self, order: int) -> InRecord | None:
        return self._batch[order] if 0 <= order < len(self._batch) else None

    def _run_jobs(self, jobs: list[Job], out: Output, now: float) -> None:
        windows = [j for j in jobs if j.chunk is not None]
        vectors, failed = embed(jobs, self.engine, self.metrics, self.settings.encoder.batch_size)
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
            with self.profile.stage("decision"):
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
        with self.profile.stage("search_other"):
            hits = self.engine.searcher.search(qv, qs, chunk_ids=list(q), memo=rt.stage1_memo,
                                               query_features=rt.query_features())
        self.metrics.search_latency.observe(time.perf_counter() - t0)
        with self.profile.stage("decision"):
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
            events = [self._event(aborted(rt.stream_id, rt.source, rt.next_window, end), now, None)]
        out.events.extend(events)
        self._ended_now.add(rt.stream_id)

    def _event(self, d: Decision, now: float, closed_at: float | None) -> MatchEvent:
        return match_event(d, closed_at, self.engine, self.settings.match, self.metrics)
