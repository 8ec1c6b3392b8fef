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
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consumers.engine import Engine
from consumers.metrics import Metrics
from streamcover.audio.chunking import normalize_chunks
from streamcover.audio.frontend import FeatureStream, push_many
from streamcover.audio.resample import StreamResampler
from streamcover.catalog.search import Stage1Memo
from streamcover.config import Settings
from streamcover.events import (
    AudioFrame,
    DeadLetter,
    MatchEvent,
    PartitionMark,
    SetListEntry,
    SetListRequest,
    Span,
    StreamState,
    WireError,
    decode_any,
    encode,
)
from streamcover.log import get_logger
from streamcover.match.decision import Decision, StreamMatcher
from streamcover.match.sequence import Sequencer, Slot

log = get_logger("streamcover.monitor")

MARK_PREFIX = "__mark__"
LAST = 1 << 62  # job order after every record of a batch (evictions)


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
    # (partition, key, value) for the compacted state topic
    states: list[tuple[int, str, bytes]] = field(default_factory=list)
    # input partition -> next offset to read after a restart
    offsets: dict[int, int] = field(default_factory=dict)
    windows: int = 0


@dataclass
class _Audio:
    samples: np.ndarray  # mono float32 at the stream's rate
    offset: int
    closed_at: float  # wall clock when this audio was sent (window-close reference)
    eos: bool


@dataclass
class _Job:
    """A window to embed and decide, or an end of stream to finish (``chunk is None``)."""

    stream: StreamRuntime
    index: int
    start: float
    end: float
    chunk: np.ndarray | None
    closed_at: float
    finish_at: float | None = None
    # Position in the batch of the record that completed it: jobs run in this order, as
    # if every record had been transformed on arrival (features are computed per batch).
    order: int = 0


class StreamRuntime:
    """Buffers, feature stream and decision state of one stream."""

    def __init__(self, stream_id: str, source: Any, partition: int, sample_rate: int,
                 settings: Settings, engine: Engine, first_seq: int, first_sample: int,
                 first_offset: int, title: str | None) -> None:
        self.stream_id = stream_id
        self.source = source
        self.partition = partition
        self.sample_rate = sample_rate
        self.settings = settings
        self.engine = engine
        self.title = title
        fps = float(engine.frontend.frames_per_second)
        self.fps = fps
        self.win_f = max(1, round(settings.audio.window_seconds * fps))
        self.hop_f = max(1, min(self.win_f, round(settings.audio.hop_seconds * fps)))
        self.min_f = max(1, min(self.win_f, math.ceil(settings.audio.min_clip_seconds * fps - 1e-9)))
        self.seq: Sequencer[_Audio] = Sequencer(
            max_gap_frames=settings.monitor.max_gap_frames,
            reorder_frames=settings.monitor.reorder_frames,
            next_seq=first_seq, next_sample=first_sample,
        )
        self.matcher = StreamMatcher(stream_id, source, settings.match,
                                     settings.audio.window_seconds, settings.audio.hop_seconds)
        self.embeddings: dict[int, np.ndarray] = {}
        self.chunk_start: dict[int, float] = {}
        # Stage-1 neighbours of this stream's chunks by window index (indices only grow), so
        # each window searches the catalog graph for its new chunk only.
        self.stage1_memo = Stage1Memo()
        self.next_window = 0
        self.finished = False
        self.low_water = first_offset
        self.recent: deque[tuple[int, int, int, int]] = deque(maxlen=64)  # offset, seq, start, n
        self.last_active = time.monotonic()
        self.skip_until = first_sample
        self.discard = 0  # feature frames to drop after a restore (see resume_point)
        self._new_epoch(first_sample)

    # ---- epochs: a fresh feature grid (start, or after a large gap) ----------------------
    def _new_epoch(self, origin_sample: int, frames_done: int = 0,
                   tail: np.ndarray | None = None, win_start: int | None = None,
                   epoch_first: int | None = None, epoch_windows: int = 0, last_end: int = 0) -> None:
        self.grid_origin = origin_sample
        self.frames_done = frames_done
        self.resampler = StreamResampler(self.sample_rate, int(self.engine.frontend.sample_rate))
        self.fstream = self.engine.frontend.stream()
        bins = int(self.engine.frontend.n_bins)
        self.feats = tail if tail is not None else np.zeros((bins, 0), dtype=np.float32)
        # Audio resampled but not yet turned into features (see ``feed``/``sync``): blocks
        # with their window-close time, the ``frames_emitted`` count each one completes and
        # the batch position of their record.
        self.pending: list[tuple[np.ndarray, float, int, int]] = []
        self.pending_samples = 0
        self.win_start = win_start if win_start is not None else frames_done
        self.epoch_first = epoch_first if epoch_first is not None else frames_done
        self.epoch_windows = epoch_windows
        self.last_end = last_end

    @property
    def hop_stream(self) -> float:
        """Stream-rate samples per feature frame."""
        return self.engine.hop_samples * self.sample_rate / float(self.engine.frontend.sample_rate)

    def frame_time(self, frame: int) -> float:
        return self.grid_origin / self.sample_rate + frame / self.fps

    def resume_point(self) -> int:
        """Where re-reading must start after a restore, so features continue *exactly*: one
        feature frame before the next one due. The fresh feature stream's first frame (no
        left context, resampler warming up) is discarded; the frames after it see only
        real samples, so they equal those of an uninterrupted run."""
        back = 1 if self.frames_done >= 1 else 0
        return round(self.grid_origin + (self.frames_done - back) * self.hop_stream)

    # ---- audio in --------------------------------------------------------------------------
    def feed(self, audio: np.ndarray, start_sample: int, closed_at: float, order: int = 0) -> None:
        """Take a block of in-order audio: resample it now, compute its features later.

        Features are computed by ``sync`` (this stream alone) or by the pipeline for all
        streams at once at the end of a batch (``Pipeline._sync_features``); either way
        each window gets the close time of the block that completed it, as if every block
        had been transformed on arrival.
        """
        if start_sample < self.skip_until:
            cut = self.skip_until - start_sample
            audio = audio[cut:]
        if audio.size == 0:
            return
        res = self.resampler.push(audio)
        if res.size == 0:
            return
        self.pending_samples += int(res.size)
        self.pending.append((res, closed_at, int(self.fstream.frames_after(self.pending_samples)), order))

    def take_pending(self) -> np.ndarray | None:
        """The pending audio as one block (None if there is none); it stays pending until
        ``absorb`` is given its features."""
        if not self.pending:
            return None
        if len(self.pending) == 1:
            return self.pending[0][0]
        return np.concatenate([b for b, _, _, _ in self.pending])

    def absorb(self, new: np.ndarray, jobs: list[_Job]) -> None:
        """Features [bins, n] of ``fstream.push(take_pending())``: split them back over the
        pending blocks and cut the windows each block completed."""
        pending, self.pending, self.pending_samples = self.pending, [], 0
        base = int(self.fstream.frames_emitted) - new.shape[1]
        pos = 0
        for _block, closed_at, upto, order in pending:
            end = max(pos, upto - base)
            self._take(new[:, pos:end], closed_at, order, jobs)
            pos = end
        if pos != new.shape[1]:
            raise RuntimeError(f"stream {self.stream_id}: {new.shape[1]} feature frames for "
                               f"pending audio that completes {pos}")

    def sync(self, jobs: list[_Job]) -> None:
        """Compute this stream's pending features now (before a finish, gap or set list)."""
        x = self.take_pending()
        if x is not None:
            self.absorb(np.asarray(self.fstream.push(x), dtype=np.float32), jobs)

    def _take(self, new: np.ndarray, closed_at: float, order: int, jobs: list[_Job]) -> None:
        if self.discard and new.ndim == 2 and new.shape[1]:
            drop = min(self.discard, new.shape[1])
            new = new[:, drop:]
            self.discard -= drop
        if new.ndim == 2 and new.shape[1]:
            self.feats = np.concatenate([self.feats, new], axis=1) if self.feats.size else new
            self.frames_done += new.shape[1]
        self._cut(closed_at, order, jobs)

    def _cut(self, closed_at: float, order: int, jobs: list[_Job]) -> None:
        buf0 = self.frames_done - self.feats.shape[1]  # grid frame of feats[:, 0]
        while self.frames_done >= self.win_start + self.win_f:
            lo = self.win_start - buf0
            chunk = normalize_chunks(self.feats[None, :, lo : lo + self.win_f].copy())[0]
            start = self.frame_time(self.win_start)
            jobs.append(_Job(self, self.next_window, start, start + self.win_f / self.fps, chunk, closed_at,
                             order=order))
            self.next_window += 1
            self.epoch_windows += 1
            self.last_end = self.win_start + self.win_f
            self.win_start += self.hop_f
        # keep the next window's frames, and the last W frames (an end-aligned tail window)
        keep_from = min(self.win_start, self.frames_done - self.win_f) - buf0
        if keep_from > 0:
            self.feats = self.feats[:, keep_from:]

    def discontinuity(self, origin_sample: int, jobs: list[_Job]) -> None:
        self.sync(jobs)  # the old epoch's audio ends where the gap starts
        self._new_epoch(origin_sample)
        self.skip_until = origin_sample
        self.discard = 0

    def finish(self, closed_at: float, jobs: list[_Job], order: int = LAST) -> None:
        """End of stream, with the chunking rules of ``streamcover.audio.chunking``: an
        end-aligned tail window if ≥ ``min_s`` is uncovered; a clip shorter than one window
        but ≥ ``min_s`` is one short chunk (so every such upload gets one window)."""
        self.sync(jobs)
        epoch_frames = self.frames_done - self.epoch_first
        avail = self.feats.shape[1]
        chunk: np.ndarray | None = None
        first = self.frames_done
        if self.epoch_windows == 0 and epoch_frames >= self.min_f and avail:
            n = min(avail, epoch_frames)
            first = self.frames_done - n
            chunk = self.feats[:, avail - n :]
        elif self.epoch_windows and self.frames_done - self.last_end >= self.min_f and avail >= self.win_f:
            first = self.frames_done - self.win_f
            chunk = self.feats[:, avail - self.win_f :]
        if chunk is not None:
            chunk = normalize_chunks(chunk[None].copy())[0]
            start = self.frame_time(first)
            jobs.append(_Job(self, self.next_window, start, start + chunk.shape[1] / self.fps,
                             chunk, closed_at, order=order))
            self.next_window += 1
        end = max(self.frame_time(self.frames_done), self.seq.next_sample / self.sample_rate)
        jobs.append(_Job(self, self.next_window, end, end, None, closed_at, finish_at=end, order=order))
        self.finished = True

    # ---- checkpoint --------------------------------------------------------------------------
    def checkpoint(self, model_id: str, catalog_version: str) -> StreamState:
        """State as of now; also moves the replay point (``low_water``) forward."""
        point = self.resume_point()
        resume = None
        for off, seq, start, n in reversed(self.recent):
            if start <= point < start + max(n, 1):
                resume = (off, seq, start)
                break
        if resume is None:
            # Nothing buffered holds the point: resume with the next frame to come.
            last = self.recent[-1] if self.recent else None
            nxt = (last[0] + 1) if last else self.low_water
            resume = (nxt, self.seq.next_seq, self.seq.next_sample)
        if self.finished:
            resume = (self.recent[-1][0] + 1 if self.recent else self.low_water,
                      self.seq.next_seq, self.seq.next_sample)
        self.low_water = resume[0]
        idx = sorted(self.embeddings)
        dim = int(next(iter(self.embeddings.values())).shape[0]) if self.embeddings else 0
        emb = (np.stack([self.embeddings[i] for i in idx]).astype("<f2").tobytes() if idx else b"")
        bins = int(self.feats.shape[0])
        return StreamState(
            stream_id=self.stream_id, source=self.source, title=self.title,
            finished=self.finished, sample_rate=self.sample_rate,
            resume_seq=resume[1], resume_sample=resume[2], resume_offset=resume[0],
            grid_origin_sample=self.grid_origin, frames_done=self.frames_done,
            win_start=self.win_start, epoch_windows=self.epoch_windows, last_end=self.last_end,
            next_window=self.next_window, feature_bins=bins,
            feature_tail=self.feats.astype("<f4").tobytes(), embed_dim=dim,
            chunk_index=idx, chunk_start=[self.chunk_start[i] for i in idx], embeddings=emb,
            matcher=self.matcher.to_state(), model_id=model_id, catalog_version=catalog_version,
            updated_at=time.time(),
        )

    @classmethod
    def restore(cls, st: StreamState, partition: int, settings: Settings, engine: Engine) -> StreamRuntime:
        rt = cls(st.stream_id, st.source, partition, st.sample_rate, settings, engine,
                 st.resume_seq, st.resume_sample, st.resume_offset, st.title)
        tail = st.feature_matrix()
        if tail.size == 0:
            tail = np.zeros((int(engine.frontend.n_bins), 0), dtype=np.float32)
        rt._new_epoch(st.grid_origin_sample, st.frames_done, tail, st.win_start, 0,
                      st.epoch_windows, st.last_end)
        rt.skip_until = rt.resume_point()
        rt.discard = 1 if st.frames_done >= 1 else 0
        # If the resume point lies in a silence-filled hole, the hole is filled again.
        rt.seq.next_sample = min(st.resume_sample, rt.skip_until)
        rt.next_window = st.next_window
        vecs = st.embedding_matrix()
        for i, (ci, cs) in enumerate(zip(st.chunk_index, st.chunk_start, strict=True)):
            rt.embeddings[ci] = vecs[i]
            rt.chunk_start[ci] = cs
        rt.matcher = StreamMatcher.from_state(st.matcher, st.stream_id, st.source, settings.match,
                                              settings.audio.window_seconds, settings.audio.hop_seconds)
        rt.finished = st.finished
        return rt


class Pipeline:
    """All streams of this monitor instance (see module docstring)."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics or Metrics()
        self.streams: dict[str, StreamRuntime] = {}
        self.restored: dict[str, tuple[int, StreamState]] = {}
        self.ended: OrderedDict[str, tuple[int, int]] = OrderedDict()  # stream -> (next_seq, next_sample)
        self.marks: dict[int, int] = {}
        self.consumed: dict[int, int] = {}
        self._rejected: OrderedDict[str, None] = OrderedDict()

    # ---- partition assignment ------------------------------------------------------------------
    def load_state(self, partition: int, key: str, value: bytes | None) -> None:
        """Feed one record of the state topic (in log order) at assignment time."""
        if key.startswith(MARK_PREFIX):
            if value is not None:
                mark = decode_any(value)
                if isinstance(mark, PartitionMark) and mark.topic == self.settings.kafka.audio_topic:
                    self.marks[mark.partition] = mark.processed_upto
            return
        if value is None:
            self.restored.pop(key, None)
            return
        st = decode_any(value)
        if not isinstance(st, StreamState):
            return
        self.restored[key] = (partition, st)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget streams of revoked partitions (their state is in the state topic)."""
        parts = set(partitions)
        for sid in [s for s, rt in self.streams.items() if rt.partition in parts]:
            del self.streams[sid]
        for sid in [s for s, (p, _) in self.restored.items() if p in parts]:
            del self.restored[sid]
        for p in parts:
            self.marks.pop(p, None)
            self.consumed.pop(p, None)
        self.metrics.active_streams.set(len(self.streams))

    # ---- the batch ---------------------------------------------------------------------------
    def process(self, records: Sequence[InRecord], now: float | None = None) -> Output:
        now = time.time() if now is None else now
        out = Output()
        jobs: list[_Job] = []
        touched: dict[str, StreamRuntime] = {}
        t0 = time.perf_counter()
        for order, rec in enumerate(records):
            self.consumed[rec.partition] = max(self.consumed.get(rec.partition, 0), rec.offset + 1)
            replay = rec.offset < self.marks.get(rec.partition, 0)
            self._record(rec, replay, now, out, jobs, touched, order)
        self._sync_features(jobs)
        self.metrics.feature_latency.observe(time.perf_counter() - t0)
        self._evict(now, jobs, touched)
        jobs.sort(key=lambda j: j.order)  # stable: each stream's jobs keep their order
        self._run_jobs(jobs, out, now)
        # Checkpoint exactly the streams that decided something (a window or an end): their
        # state must move together with their events; the others keep their replay point.
        decided = {j.stream.stream_id: j.stream for j in jobs}
        for rt in decided.values():
            if rt.stream_id in self.streams or rt.finished:
                st = rt.checkpoint(self.engine.model_id, self.engine.catalog_version)
                out.states.append((rt.partition, rt.stream_id, encode(st)))
            if rt.finished:
                self.streams.pop(rt.stream_id, None)
                self._remember_end(rt.stream_id, rt.seq.next_seq, rt.seq.next_sample)
        for p, upto in self.consumed.items():
            mark = PartitionMark(topic=self.settings.kafka.audio_topic, partition=p,
                                 processed_upto=max(upto, self.marks.get(p, 0)), updated_at=now)
            self.marks[p] = mark.processed_upto
            out.states.append((p, mark_key(self.settings.kafka.audio_topic, p), encode(mark)))
        out.offsets = self.commit_offsets()
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

    def _remember_end(self, sid: str, next_seq: int, next_sample: int) -> None:
        self.ended[sid] = (next_seq, next_sample)
        self.ended.move_to_end(sid)
        while len(self.ended) > 10 * self.settings.monitor.max_streams:
            self.ended.popitem(last=False)

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

    def _record(self, rec: InRecord, replay: bool, now: float, out: Output, jobs: list[_Job],
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
            rt = self.streams.get(record.stream_id)
            if rt is None and record.stream_id in self.restored:
                rt = self._restore(record.stream_id)
            if rt is None:
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
        rt = self._stream_for(frame, rec, replay, out)
        if rt is None:
            return
        rt.last_active = time.monotonic()
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
        audio = _Audio(samples, rec.offset, closed_at, frame.eos)
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

    def _sync_features(self, jobs: list[_Job]) -> None:
        """Features of every stream with pending audio in one batched front-end call
        (``push_many``: one FFT/peak-picking pass over the frames of all streams)."""
        due: list[StreamRuntime] = []
        blocks: list[np.ndarray] = []
        for rt in self.streams.values():
            block = rt.take_pending()
            if block is not None:
                due.append(rt)
                blocks.append(block)
        if not due:
            return
        if all(isinstance(rt.fstream, FeatureStream) for rt in due):
            new = push_many([rt.fstream for rt in due], blocks)
        else:  # a front end without the batched path
            new = [rt.fstream.push(b) for rt, b in zip(due, blocks, strict=True)]
        for rt, feats in zip(due, new, strict=True):
            rt.absorb(np.asarray(feats, dtype=np.float32), jobs)

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
            return rt
        if sid in self.restored:
            rt = self._restore(sid)
            if rt is not None:
                return rt
        if sid in self.ended:
            next_seq, _ = self.ended[sid]
            if frame.seq < next_seq:
                self.metrics.frames_dropped.labels("replayed" if replay else "after_end").inc()
                return None
            del self.ended[sid]
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

    def _evict(self, now: float, jobs: list[_Job], touched: dict[str, StreamRuntime]) -> None:
        limit = time.monotonic() - self.settings.monitor.idle_evict_seconds
        for sid, rt in list(self.streams.items()):
            if rt.last_active < limit and not rt.finished:
                log.info("stream_evicted", stream=sid, idle_s=self.settings.monitor.idle_evict_seconds)
                self.metrics.evicted.inc()
                rt.finish(now, jobs)
                touched[sid] = rt

    # ---- embedding, search, decisions ---------------------------------------------------------
    def _run_jobs(self, jobs: list[_Job], out: Output, now: float) -> None:
        windows = [j for j in jobs if j.chunk is not None]
        vectors: dict[int, np.ndarray] = {}
        bs = self.settings.encoder.batch_size
        by_len: dict[int, list[int]] = {}
        for i, j in enumerate(jobs):
            if j.chunk is not None:
                by_len.setdefault(j.chunk.shape[1], []).append(i)
        for ids in by_len.values():
            for b in range(0, len(ids), bs):
                part = ids[b : b + bs]
                batch = np.stack([jobs[i].chunk for i in part])  # type: ignore[misc]
                t0 = time.perf_counter()
                emb = np.asarray(self.engine.encoder.embed_chunks(batch), dtype=np.float32)
                self.metrics.embed_latency.observe(time.perf_counter() - t0)
                self.metrics.batch_size.observe(len(part))
                for i, v in zip(part, emb, strict=True):
                    vectors[i] = v
        self.metrics.windows.inc(len(windows))
        out.windows += len(windows)
        for i, j in enumerate(jobs):
            rt = j.stream
            if j.chunk is None:
                for d in rt.matcher.finish(j.finish_at or j.end, j.index):
                    out.events.append(self._event(d, now, j.closed_at))
                continue
            rt.embeddings[j.index] = vectors[i]
            rt.chunk_start[j.index] = j.start
            rt.matcher.add_chunk(j.index, j.start, j.end)
            q = rt.matcher.query_indices()
            for old in [k for k in rt.embeddings if k < q[0]]:
                del rt.embeddings[old]
                rt.chunk_start.pop(old, None)
            qv = np.stack([rt.embeddings[k] for k in q])
            qs = np.array([rt.chunk_start[k] for k in q], dtype=np.float64)
            t0 = time.perf_counter()
            hits = self.engine.searcher.search(qv, qs, chunk_ids=list(q), memo=rt.stage1_memo)
            self.metrics.search_latency.observe(time.perf_counter() - t0)
            for d in rt.matcher.on_window(j.index, j.start, j.end, hits):
                out.events.append(self._event(d, now, j.closed_at))

    def _event(self, d: Decision, now: float, closed_at: float | None) -> MatchEvent:
        emitted = time.time()
        latency = max(0.0, (emitted - closed_at) * 1000.0) if closed_at is not None else 0.0
        if closed_at is not None:
            self.metrics.event_latency.observe(latency / 1000.0)
        self.metrics.events_out.labels(d.kind).inc()
        return MatchEvent(
            event_id=d.event_id, kind=d.kind, stream_id=d.stream_id, source=d.source,
            reference_id=d.reference_id, reference=d.reference, score=_finite(d.score),
            threshold=self.settings.match.threshold, chunks_used=d.chunks_used,
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
