"""Deciding, window by window, what a stream contains: matches, updates, verdicts, set lists.

Input per window: the two-stage search over the stream's query chunks (its accumulated
chunk embeddings, within a sliding horizon for live streams). Each hit carries the MaxMean
score of that query against one reference and the per-chunk alignment
``(query_start_s, ref_chunk_start_s, sim)``: the max similarity of each query chunk to any
chunk of the reference. MaxMean over any subset of query chunks is the mean of those
chunks' sims, so the matcher can score a live segment on exactly its own chunks.

Uploads (``source="upload"``), on the hit score (stage 3's fused score when the search
verified the hit, else MaxMean):
  * ``match`` the first time a reference's score reaches ``threshold`` with ≥ ``min_chunks``
    (``one_chunk_threshold`` while the query is a single chunk);
  * ``update`` when an open match's score grows by ``update_min_delta`` or its aligned
    reference span grows by ``update_min_span_s``;
  * hysteresis: a match is released only when its score falls below ``release_threshold``;
  * ``final`` at end of stream: the best open match, or ``reference_id=None``.

Live streams (``source="live"``): set-list segmentation, on chunk similarities (the
cosine scale of MaxMean: ``live_threshold``, ``chunk_threshold``).
  * With no open segment, the newest run of chunks that agree on one reference
    (each chunk's sim ≥ ``chunk_threshold``, at least ``live_min_chunks`` of them) opens a
    segment once their MaxMean reaches ``live_threshold``.
  * An open segment continues while the newest chunk still matches its reference. It closes
    when another reference clearly takes the newest chunk, or when ``change_patience_chunks``
    chunks in a row fall below ``chunk_threshold``. Boundaries are placed midway through
    the overlap of the last matching and the first non-matching window (error ≤ hop / 2 when
    windows are classified by majority).
  * Closing emits ``setlist_segment`` (reference, start, end, score); ``setlist`` gives the
    whole list on demand and at end of stream.
  * Memory is bounded for streams of any length: the matcher keeps the newest
    ``setlist_max_entries`` closed segments and counts the older ones, which ``setlist``
    reports as ``setlist_omitted`` (each was already emitted as a ``setlist_segment``).
    Uploads keep at most ``_MAX_RELEASED`` released matches besides the open ones.

Event ids are :func:`streamcover.events.event_id` over (stream, kind, reference, segment
start in ms, window index), so a replay after a crash yields identical ids. The records the
matcher reads, keeps and returns (hits, decisions, its chunk and match state) are in
:mod:`streamcover.match.records`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from streamcover.config import MatchSettings
from streamcover.events import EventKind, SourceKind, event_id
from streamcover.match.records import (
    Chunk,
    Decision,
    Hit,
    OpenMatch,
    SetListItem,
    open_from_state,
    open_state,
)

__all__ = ["Decision", "Hit", "SetListItem", "StreamMatcher"]


def _meta(metadata: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in metadata.items() if v is not None}


def _finite_or_none(x: object) -> float | None:
    if isinstance(x, int | float) and math.isfinite(x):
        return float(x)
    return None


def _ms(t: float) -> int:
    return round(t * 1000)


# Released upload matches kept (oldest dropped first): one that re-opens starts afresh anyway.
_MAX_RELEASED = 32


class StreamMatcher:
    """The decision state of one stream (see module docstring). Pure: no I/O, no clock."""

    def __init__(
        self,
        stream_id: str,
        source: SourceKind,
        settings: MatchSettings,
        window_s: float,
        hop_s: float,
    ) -> None:
        self.stream_id = stream_id
        self.source = source
        self.settings = settings
        self.window_s = window_s
        self.hop_s = hop_s
        self.chunks: list[Chunk] = []
        self.matches: dict[str, OpenMatch] = {}  # uploads
        self.segment: OpenMatch | None = None  # live
        self.closed: list[SetListItem] = []
        self.closed_omitted = 0  # closed segments dropped from ``closed`` (the oldest)
        self.last_boundary = 0.0
        self.handover = -1
        self.last_best: tuple[str | None, float] = (None, 0.0)
        # reference -> (maxmean, alignment score) of the latest window's hits
        self.stage_scores: dict[str, tuple[float | None, float | None]] = {}
        self.finished = False

    # ---- which chunks form the next query --------------------------------------------------
    def query_indices(self) -> list[int]:
        """Chunk indices the next search should use as its query (horizon for live)."""
        if self.source == "live":
            keep = self.settings.horizon_chunks
        else:
            keep = self.settings.max_upload_chunks
        return [c.index for c in self.chunks[-keep:]]

    def add_chunk(self, index: int, start: float, end: float) -> None:
        """Register a new chunk (its embedding is kept by the caller)."""
        if self.chunks and index <= self.chunks[-1].index:
            raise ValueError(f"chunk {index} is not after chunk {self.chunks[-1].index}")
        self.chunks.append(Chunk(index, start, end))
        self._trim()

    def _trim(self) -> None:
        # Keep what the query needs plus what an open segment still refers to.
        keep = max(self.settings.horizon_chunks, self.settings.change_patience_chunks) + 2
        if self.source == "upload":
            keep = self.settings.max_upload_chunks
        if len(self.chunks) > keep:
            del self.chunks[: len(self.chunks) - keep]

    # ---- per window --------------------------------------------------------------------------
    def on_window(self, index: int, start: float, end: float, hits: Sequence[Hit]) -> list[Decision]:
        """The search result for the query ending with chunk ``index``; returns decisions."""
        if not self.chunks or self.chunks[-1].index != index:
            self.add_chunk(index, start, end)
        by_start = {_ms(c.start): c for c in self.chunks}
        metadata: dict[str, dict[str, str]] = {}
        scores: dict[str, float] = {}
        self.stage_scores = {}
        for hit in hits:
            metadata[hit.reference_id] = _meta(hit.metadata)
            scores[hit.reference_id] = float(hit.score)
            self.stage_scores[hit.reference_id] = (
                _finite_or_none(getattr(hit, "maxmean", None)),
                _finite_or_none(getattr(hit, "align_score", None)))
            for q_start, r_start, sim in hit.alignment:
                chunk = by_start.get(_ms(q_start))
                if chunk is not None and math.isfinite(sim):
                    chunk.sims[hit.reference_id] = (float(sim), float(r_start))
        if scores:
            best = max(scores, key=lambda r: scores[r])
            self.last_best = (best, scores[best])
        else:
            self.last_best = (None, 0.0)
        if self.source == "upload":
            return self._upload_window(index, scores, metadata)
        return self._live_window(index, metadata)

    # ---- uploads -----------------------------------------------------------------------------
    def _ref_span(self, ref: str, chunks: Sequence[Chunk]) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
        """(query span, reference span) of the chunks that align with ``ref``."""
        good = [c for c in chunks if c.sims.get(ref, (-1.0, 0.0))[0] >= self.settings.chunk_threshold]
        if not good:
            good = [c for c in chunks if ref in c.sims]
        if not good:
            return None, None
        q = (min(c.start for c in good), max(c.end for c in good))
        starts = [c.sims[ref][1] for c in good if ref in c.sims]
        r = (min(starts), max(starts) + self.window_s) if starts else None
        return q, r

    def _upload_window(
        self, index: int, scores: dict[str, float], metadata: dict[str, dict[str, str]]
    ) -> list[Decision]:
        s = self.settings
        out: list[Decision] = []
        used = len(self.query_indices())
        for ref, m in self.matches.items():
            if not m.open:
                continue
            score = scores.get(ref, 0.0)
            m.score = score
            if score < s.release_threshold:
                m.open = False
                continue
            q, r = self._ref_span(ref, self.chunks)
            m.ref_span = r
            m.last_index = index
            span_len = (r[1] - r[0]) if r else 0.0
            if score >= m.emitted_score + s.update_min_delta or span_len >= m.emitted_ref_span + s.update_min_span_s:
                m.emitted_score = max(m.emitted_score, score)
                m.emitted_ref_span = max(m.emitted_ref_span, span_len)
                out.append(self._decision("update", m, score, used, q or (m.start, self.chunks[-1].end), r, index))
        ranked = sorted(scores, key=lambda r: -scores[r])
        if ranked:
            ref = ranked[0]
            score = scores[ref]
            current = self.matches.get(ref)
            need = s.one_chunk_threshold if used == 1 else s.threshold
            if (current is None or not current.open) and score >= need and used >= s.min_chunks:
                q, r = self._ref_span(ref, self.chunks)
                q = q or (self.chunks[0].start, self.chunks[-1].end)
                m = OpenMatch(ref, metadata.get(ref, {}), q[0], index, index, score, score,
                              (r[1] - r[0]) if r else 0.0, r)
                self.matches.pop(ref, None)
                self.matches[ref] = m
                self._drop_released()
                out.append(self._decision("match", m, score, used, q, r, index))
        return out

    def _drop_released(self) -> None:
        released = [r for r, m in self.matches.items() if not m.open]  # oldest first
        for ref in released[: max(0, len(released) - _MAX_RELEASED)]:
            del self.matches[ref]

    def _bound_closed(self) -> None:
        excess = len(self.closed) - self.settings.setlist_max_entries
        if excess > 0:
            del self.closed[:excess]
            self.closed_omitted += excess

    # ---- live --------------------------------------------------------------------------------
    def _sim(self, chunk: Chunk, ref: str) -> float:
        return chunk.sims.get(ref, (0.0, 0.0))[0]

    def _boundary(self, before: Chunk | None, after: Chunk) -> float:
        """Midway through the overlap of the last window before and the first window after."""
        if before is None:
            return max(self.last_boundary, after.start)
        return max(self.last_boundary, (before.end + after.start) / 2)

    def _live_window(self, index: int, metadata: dict[str, dict[str, str]]) -> list[Decision]:
        s = self.settings
        out: list[Decision] = []
        newest = self.chunks[-1]
        seg = self.segment
        if seg is not None:
            seg.reference.update(metadata.get(seg.reference_id, {}))
            mine = self._sim(newest, seg.reference_id)
            others = [(self._sim(newest, r), r) for r in newest.sims if r != seg.reference_id]
            other_sim, _other = max(others) if others else (0.0, "")
            taken = other_sim >= s.live_threshold and other_sim > mine + s.change_margin
            if mine >= s.chunk_threshold and not taken:
                seg.misses = 0
                seg.last_index = index
                seg_chunks = self._segment_chunks(seg)
                score = sum(self._sim(c, seg.reference_id) for c in seg_chunks) / len(seg_chunks)
                seg.score = score
                _q, r = self._ref_span(seg.reference_id, seg_chunks)
                if r is not None:
                    seg.ref_span = (min(r[0], seg.ref_span[0]), max(r[1], seg.ref_span[1])) if seg.ref_span else r
                span_len = (seg.ref_span[1] - seg.ref_span[0]) if seg.ref_span else 0.0
                if score >= seg.emitted_score + s.update_min_delta or span_len >= seg.emitted_ref_span + s.update_min_span_s:
                    seg.emitted_score = max(seg.emitted_score, score)
                    seg.emitted_ref_span = max(seg.emitted_ref_span, span_len)
                    out.append(self._decision("update", seg, score, len(seg_chunks),
                                              (seg.start, newest.end), seg.ref_span, index))
            else:
                seg.misses += 1
                if taken:
                    # The newest chunk is the first of the next song: the change lies between
                    # the end of the last matching window and the start of this one.
                    out.extend(self._close_segment(index, next_first=newest))
                elif seg.misses >= s.change_patience_chunks:
                    out.extend(self._close_segment(index))
        if self.segment is None:
            out.extend(self._try_open(index, metadata))
        return out

    def _segment_chunks(self, seg: OpenMatch) -> list[Chunk]:
        chunks = [c for c in self.chunks if seg.first_index <= c.index <= seg.last_index]
        return chunks[-self.settings.horizon_chunks:] or [self.chunks[-1]]

    def _close_segment(self, index: int, stream_end: float | None = None,
                       next_first: Chunk | None = None) -> list[Decision]:
        seg = self.segment
        assert seg is not None
        self.segment = None
        last = next((c for c in self.chunks if c.index == seg.last_index), None)
        after = next_first or next((c for c in self.chunks if c.index == seg.last_index + 1), None)
        self.handover = next_first.index if next_first is not None else -1
        if stream_end is not None and after is None:
            end = stream_end
        elif last is not None and after is not None:
            end = (last.end + after.start) / 2
        else:
            end = last.end if last is not None else seg.start
        end = max(end, seg.start)
        self.last_boundary = end
        item = SetListItem(seg.reference_id, dict(seg.reference), seg.start, end, seg.score)
        self.closed.append(item)
        self._bound_closed()
        chunks_used = seg.last_index - seg.first_index + 1
        return [self._decision("setlist_segment", seg, seg.score, chunks_used, (seg.start, end),
                               seg.ref_span, index)]

    def _try_open(self, index: int, metadata: dict[str, dict[str, str]]) -> list[Decision]:
        s = self.settings
        newest = self.chunks[-1]
        # Chunks not yet claimed by a closed segment, newest last, within the horizon.
        free = [c for c in self.chunks if c.end > self.last_boundary + 1e-6 or c.index == newest.index]
        free = free[-s.horizon_chunks:]
        ranked = sorted(newest.sims, key=lambda r: -self._sim(newest, r))
        for ref in ranked[:3]:
            run: list[Chunk] = []
            for c in reversed(free):
                if self._sim(c, ref) >= s.chunk_threshold and c.start >= self.last_boundary - self.window_s / 2:
                    run.append(c)
                else:
                    break
            run.reverse()
            if len(run) < s.live_min_chunks or not run:
                continue
            score = sum(self._sim(c, ref) for c in run) / len(run)
            if score < s.live_threshold:
                continue
            before = next((c for c in self.chunks if c.index == run[0].index - 1), None)
            if run[0].index <= self.handover <= run[-1].index:
                start = self.last_boundary  # handed over from the segment that just closed
            else:
                start = self._boundary(before, run[0])
            _, r = self._ref_span(ref, run)
            span_len = (r[1] - r[0]) if r else 0.0
            seg = OpenMatch(ref, metadata.get(ref, {}), start, run[0].index, index, score, score, span_len, r)
            self.segment = seg
            return [self._decision("match", seg, score, len(run), (start, newest.end), r, index)]
        return []

    # ---- end of stream and on demand ------------------------------------------------------------
    def finish(self, stream_end: float, window_index: int | None = None) -> list[Decision]:
        """End of stream: live closes its segment and lists the set; uploads get a verdict."""
        if self.finished:
            return []
        self.finished = True
        idx = window_index if window_index is not None else (self.chunks[-1].index if self.chunks else -1)
        if self.source == "live":
            out: list[Decision] = []
            if self.segment is not None:
                out.extend(self._close_segment(idx, stream_end=stream_end))
            out.append(self.setlist(idx, stream_end=stream_end, tag="eos"))
            return out
        open_matches = [m for m in self.matches.values() if m.open]
        used = len(self.query_indices())
        if open_matches:
            best = max(open_matches, key=lambda m: m.score)
            q, _ = self._ref_span(best.reference_id, self.chunks)
            span = q or (best.start, stream_end)
            return [self._decision("final", best, best.score, used, span, best.ref_span, idx)]
        return [Decision(
            kind="final",
            event_id=event_id(self.stream_id, "final", None, 0, idx),
            stream_id=self.stream_id, source=self.source, reference_id=None, reference={},
            score=self.last_best[1], chunks_used=used, stream_span=(0.0, max(stream_end, 0.0)),
            reference_span=None, window_index=idx,
        )]

    def setlist(self, window_index: int, stream_end: float | None = None, tag: str = "") -> Decision:
        """The whole set list so far (closed segments plus the open one, if any)."""
        items = list(self.closed)
        if self.segment is not None:
            seg = self.segment
            last = next((c for c in self.chunks if c.index == seg.last_index), None)
            end = last.end if last is not None else seg.start
            items.append(SetListItem(seg.reference_id, dict(seg.reference), seg.start, end, seg.score))
        end = stream_end if stream_end is not None else (self.chunks[-1].end if self.chunks else 0.0)
        return Decision(
            kind="setlist",
            event_id=event_id(self.stream_id, "setlist", tag, self.closed_omitted + len(items),
                              window_index),
            stream_id=self.stream_id, source=self.source, reference_id=None, reference={},
            score=0.0, chunks_used=0, stream_span=(0.0, max(end, 0.0)), reference_span=None,
            window_index=window_index, setlist=tuple(items), setlist_omitted=self.closed_omitted,
        )

    def _decision(
        self,
        kind: EventKind,
        m: OpenMatch,
        score: float,
        chunks_used: int,
        span: tuple[float, float],
        ref_span: tuple[float, float] | None,
        index: int,
    ) -> Decision:
        maxmean, align = (self.stage_scores.get(m.reference_id, (None, None))
                          if self.source == "upload" else (None, None))
        return Decision(
            kind=kind,
            event_id=event_id(self.stream_id, kind, m.reference_id, _ms(m.start), index),
            stream_id=self.stream_id, source=self.source, reference_id=m.reference_id,
            reference=dict(m.reference), score=float(score), chunks_used=chunks_used,
            stream_span=(float(span[0]), float(max(span[1], span[0]))),
            reference_span=ref_span, window_index=index, maxmean=maxmean,
            alignment_score=align,
        )

    # ---- checkpointing -------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """A msgpack-friendly snapshot (restored by :meth:`from_state`)."""
        return {
            "chunks": [[c.index, c.start, c.end, {r: list(v) for r, v in c.sims.items()}] for c in self.chunks],
            "matches": {r: open_state(m) for r, m in self.matches.items()},
            "segment": open_state(self.segment) if self.segment else None,
            "closed": [asdict(i) for i in self.closed],
            "closed_omitted": self.closed_omitted,
            "last_boundary": self.last_boundary,
            "handover": self.handover,
            "last_best": [self.last_best[0], self.last_best[1]],
            "finished": self.finished,
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        stream_id: str,
        source: SourceKind,
        settings: MatchSettings,
        window_s: float,
        hop_s: float,
    ) -> StreamMatcher:
        m = cls(stream_id, source, settings, window_s, hop_s)
        m.chunks = [
            Chunk(int(i), float(a), float(b), {str(r): (float(v[0]), float(v[1])) for r, v in sims.items()})
            for i, a, b, sims in state["chunks"]
        ]
        m.matches = {str(r): open_from_state(o) for r, o in state["matches"].items()}
        m.segment = open_from_state(state["segment"]) if state["segment"] else None
        m.closed = [SetListItem(**i) for i in state["closed"]]
        m.closed_omitted = int(state.get("closed_omitted", 0))
        m._bound_closed()
        m._drop_released()
        m.last_boundary = float(state["last_boundary"])
        m.handover = int(state.get("handover", -1))
        m.last_best = (state["last_best"][0], float(state["last_best"][1]))
        m.finished = bool(state["finished"])
        return m
