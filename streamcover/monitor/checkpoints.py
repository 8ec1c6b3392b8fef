"""The monitor's bookkeeping of the state topic and of how far each input partition has got.

Checkpoints and replay. A stream's state is written in the same transaction as its events,
at every window close and at end of stream. It records where audio must be re-read from
(``resume_offset``): the frame holding the first sample not yet turned into feature frames.
The offset committed for a partition is the smallest such point over its streams, so a
restart re-reads at most ~one window of audio per stream; frames already accounted for are
dropped by sequence number, and records below the partition mark are never acted on twice
(no duplicate dead letters or set lists).

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
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from streamcover.config import Settings
from streamcover.events import (
    PartitionMark,
    SourceKind,
    StreamState,
    WireError,
    decode_any,
    encode,
)
from streamcover.log import get_logger
from streamcover.monitor.records import InRecord, Output

if TYPE_CHECKING:
    from streamcover.monitor.stream import StreamRuntime

log = get_logger(__name__)

MARK_PREFIX = "__mark__"
CLOSED_SEQ = 1 << 62  # next_seq of a stream closed by a fault: all its later frames are dropped


def mark_key(topic: str, partition: int) -> str:
    return f"{MARK_PREFIX}:{topic}:{partition}"


class Checkpoints:
    """What this instance knows of its partitions' state records and progress (see the
    module docstring); the streams in memory are the pipeline's."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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

    # ---- the state topic, read at assignment ---------------------------------------------
    def load(self, partition: int, key: str, value: bytes | None) -> None:
        """One record of the state topic, in log order. One that cannot be decoded is
        skipped with a warning: a corrupt checkpoint must not stop every start."""
        self.clock.setdefault(partition, (-math.inf, time.time()))
        try:
            record = decode_any(value) if value is not None else None
        except Exception as exc:  # WireError by contract; anything else is as unreadable
            reason = exc.reason if isinstance(exc, WireError) else type(exc).__name__
            log.warning("state_unreadable", key=key[:200], partition=partition, reason=reason)
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

    def drop(self, parts: set[int]) -> None:
        """Forget revoked partitions (their state is in the state topic)."""
        for sid in [s for s, (p, _) in self.restored.items() if p in parts]:
            del self.restored[sid]
        for sid in [s for s, (p, _, _) in self.closing.items() if p in parts]:
            del self.closing[sid]
        for p in parts:
            self.marks.pop(p, None)
            self.consumed.pop(p, None)
            self.clock.pop(p, None)

    # ---- progress of the input partitions ------------------------------------------------
    def consume(self, rec: InRecord, now: float) -> bool:
        """Count a record as read and advance its partition's clock; whether it is a replay."""
        self.consumed[rec.partition] = max(self.consumed.get(rec.partition, 0), rec.offset + 1)
        self._tick(rec, now)
        return self.replay(rec)

    def replay(self, rec: InRecord) -> bool:
        return rec.offset < self.marks.get(rec.partition, 0)

    def _tick(self, rec: InRecord, now: float) -> None:
        """Advance the partition's record clock (a producer's timestamp counts up to now)."""
        newest, _ = self.clock.get(rec.partition, (-math.inf, now))
        ts = rec.timestamp_ms / 1000.0
        if ts > 0:
            newest = max(newest, min(ts, now))
        self.clock[rec.partition] = (newest, now)

    def progress(self, partition: int, now: float) -> float:
        """How far the partition has got in time: its newest record's time, or the wall
        clock once no record has come for ``idle_evict_seconds`` (it is caught up)."""
        newest, since = self.clock.get(partition, (-math.inf, now))
        if now - since >= self.settings.monitor.idle_evict_seconds:
            return max(newest, now)
        return newest

    def commit_offsets(self, streams: Iterable[StreamRuntime]) -> dict[int, int]:
        offsets = dict(self.consumed)
        for rt in streams:
            if rt.partition in offsets:
                offsets[rt.partition] = min(offsets[rt.partition], rt.low_water)
        for p, st in self.restored.values():
            if p in offsets and not st.finished:
                offsets[p] = min(offsets[p], st.resume_offset)
        return offsets

    def write_marks(self, out: Output, now: float) -> None:
        """The partition marks of the batch: records below them are never acted on again."""
        topic = self.settings.kafka.audio_topic
        for p, upto in self.consumed.items():
            mark = PartitionMark(topic=topic, partition=p,
                                 processed_upto=max(upto, self.marks.get(p, 0)), updated_at=now)
            self.marks[p] = mark.processed_upto
            out.states.append((p, mark_key(topic, p), encode(mark)))

    # ---- finished streams ----------------------------------------------------------------
    def close(self, rt: StreamRuntime) -> None:
        """A finished stream (out of memory): its checkpoint waits for its tombstone."""
        next_seq = CLOSED_SEQ if rt.failed else rt.seq.next_seq
        self.remember_end(rt.stream_id, next_seq, rt.seq.next_sample)
        self.closing[rt.stream_id] = (rt.partition, max(rt.last_offset + 1, rt.low_water), next_seq)

    def close_unopened(self, sid: str, partition: int, end_offset: int) -> None:
        """A stream closed by a fault before it had a runtime: every later frame dropped."""
        self.remember_end(sid, CLOSED_SEQ, 0)
        self.closing[sid] = (partition, end_offset, CLOSED_SEQ)

    def reopen(self, sid: str) -> None:
        """A finished stream's id comes back with new frames: a new stream."""
        self.ended.pop(sid, None)
        self.closing.pop(sid, None)

    def tombstone(self, out: Output) -> None:
        """Delete the checkpoints of finished streams no restart can re-read a frame of."""
        if not self.closing or not out.offsets:
            return
        for sid, (p, end, next_seq) in list(self.closing.items()):
            if out.offsets.get(p, -1) >= end:
                out.states.append((p, sid, None))
                del self.closing[sid]
                self.remember_end(sid, next_seq, 0)  # stray frames after it are still dropped

    def remember_end(self, sid: str, next_seq: int, next_sample: int) -> None:
        self.ended[sid] = (next_seq, next_sample)
        self.ended.move_to_end(sid)
        while len(self.ended) > 10 * self.settings.monitor.max_streams:
            self.ended.popitem(last=False)

    def end_seq(self, sid: str) -> int | None:
        """next_seq of a finished stream, if this instance still knows it ended."""
        if sid in self.closing:
            return self.closing[sid][2]
        return self.ended[sid][0] if sid in self.ended else None


def closed_state(sid: str, source: SourceKind, title: str | None, rate: int, end_offset: int,
                 model_id: str, catalog_version: str) -> StreamState:
    """The checkpoint of a stream closed by a fault: finished, every later seq dropped."""
    return StreamState(
        stream_id=sid, source=source, title=title, finished=True, sample_rate=rate,
        resume_seq=CLOSED_SEQ, resume_sample=0, resume_offset=max(0, end_offset),
        grid_origin_sample=0, frames_done=0, win_start=0, epoch_windows=0, last_end=0,
        next_window=0, feature_bins=0, embed_dim=0, model_id=model_id,
        catalog_version=catalog_version, updated_at=time.time(),
    )
