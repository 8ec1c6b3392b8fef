"""Open-set detection for live streams: set lists on real music, and their thresholds.

A live stream runs through the monitor's own loop (:func:`streamcover.eval.detect.monitor_windows`:
the matcher's query, the live horizon of accumulated chunks, searched with the stream's
:class:`Stage1Memo`, no stage 3) with a :class:`StreamMatcher` in live mode. Every window's
hits are recorded with their per-chunk alignments (the chunk similarities live decisions are
made on), so any ``match.live_threshold`` / ``match.chunk_threshold`` is decided again by
replaying the real matcher over the records (:func:`replay_live`), with no search.

* **False alarms**: on a negative stream (unrelated music played back to back) every set-list
  segment the matcher opens (a ``match`` event) is one; counted per hour of negative audio.
* **Recall**: a live set is pieces of catalogued recordings (and uncatalogued music between
  them); a piece is found when a closed segment on its reference overlaps it. The boundary
  error of a found piece is how far the segment on its reference that overlaps it most
  starts and ends from the piece.
* **Wrong segments**: segments on a set whose reference is not that of any piece they overlap.

Unlike uploads, a live decision depends on the matcher's state (an open segment holds the
stream until it closes), so no per-stream number decides every threshold: each grid point is
a replay (:func:`live_sweep`). The confidence curve (:func:`live_curve`) is the measured rate
at each grid threshold for the chosen chunk threshold, made non-increasing from the top (a
replay at a higher threshold can split one false segment into two).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamcover.catalog.search import TwoStageSearcher
from streamcover.config import AudioSettings, MatchSettings
from streamcover.eval.detect import RecordedHit, monitor_windows, per_hour, replay
from streamcover.match.decision import Decision

KINDS = ("negative", "set")


@dataclass(frozen=True)
class Piece:
    """What a live stream plays from ``start`` to ``end`` (seconds): a catalogued reference,
    or uncatalogued music (``ref`` None); ``source`` names the recording."""

    ref: str | None
    start: float
    end: float
    source: str = ""


@dataclass(frozen=True)
class LiveStream:
    """One live stream to decide: its front-end features and what plays when."""

    stream_id: str
    kind: str  # one of KINDS
    features: np.ndarray  # float32 [bins, T]
    fps: float
    pieces: tuple[Piece, ...]

    @property
    def seconds(self) -> float:
        return self.features.shape[1] / self.fps


@dataclass
class LiveWindow:
    """One window's search: its chunk span, how many newest chunks formed the query, and
    per hit (reference, score, per query chunk: reference chunk start, similarity)."""

    start: float
    end: float
    used: int
    hits: list[tuple[str, float, list[float], list[float]]]


@dataclass
class LiveResult:
    """What the monitor's loop saw on one live stream, window by window, and the segments
    its matcher (at the run's settings) closed."""

    stream_id: str
    kind: str
    seconds: float
    pieces: list[Piece]
    windows: list[LiveWindow] = field(default_factory=list)
    events: list[tuple[str, str | None, float, float, float]] = field(default_factory=list)

    def recorded(self) -> list[tuple[float, float, list[RecordedHit]]]:
        """The windows as :func:`streamcover.eval.detect.replay` takes them."""
        out = []
        for k, w in enumerate(self.windows):
            q_starts = [self.windows[i].start for i in range(k - w.used + 1, k + 1)]
            hits = [RecordedHit(ref, score, alignment=[
                (q, r, math.nan if s is None else s)
                for q, r, s in zip(q_starts, rs, sims, strict=True)]) for ref, score, rs, sims in w.hits]
            out.append((w.start, w.end, hits))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "kind": self.kind, "seconds": round(self.seconds, 3),
                "pieces": [[p.ref, round(p.start, 3), round(p.end, 3), p.source] for p in self.pieces],
                "windows": [[round(w.start, 4), round(w.end, 4), w.used,
                             [[r, round(s, 6), [round(x, 3) for x in rs],
                               [None if not math.isfinite(x) else round(x, 6) for x in sims]]
                              for r, s, rs, sims in w.hits]] for w in self.windows],
                "events": [list(e) for e in self.events]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LiveResult:
        return cls(str(d["stream_id"]), str(d["kind"]), float(d["seconds"]),
                   [Piece(p[0], float(p[1]), float(p[2]), str(p[3])) for p in d["pieces"]],
                   [LiveWindow(float(a), float(b), int(u),
                               [(str(r), float(s), [float(x) for x in rs],
                                 [math.nan if x is None else float(x) for x in sims])
                                for r, s, rs, sims in hits]) for a, b, u, hits in d["windows"]],
                   [(str(k), r, float(s), float(a), float(b)) for k, r, s, a, b in d["events"]])


def _events(decisions: Iterable[Decision]) -> list[tuple[str, str | None, float, float, float]]:
    return [(d.kind, d.reference_id, float(d.score), float(d.stream_span[0]), float(d.stream_span[1]))
            for d in decisions if d.kind in ("match", "setlist_segment")]


def run_live_stream(stream: LiveStream, embed: Any, searcher: TwoStageSearcher,
                    audio: AudioSettings, match: MatchSettings, top_n: int = 10) -> LiveResult:
    """The monitor's loop over one live stream (module docstring), recorded."""
    res = LiveResult(stream.stream_id, stream.kind, stream.seconds, list(stream.pieces))
    for step in monitor_windows(stream.stream_id, "live", stream.features, stream.fps, embed,
                                searcher, audio, match, top_n):
        if step.hits is not None:
            k = step.index
            if step.query != list(range(k - len(step.query) + 1, k + 1)):
                raise AssertionError(f"live query {step.query} is not the newest chunks up to {k}")
            hits = []
            for h in step.hits:
                by_q = {round(q * 1000): (r, s) for q, r, s in h.alignment}
                pairs = [by_q.get(round(q * 1000), (0.0, math.nan)) for q in step.query_starts]
                hits.append((h.reference_id, float(h.score), [p[0] for p in pairs], [p[1] for p in pairs]))
            res.windows.append(LiveWindow(step.start, step.end, len(step.query), hits))
        res.events.extend(_events(step.decisions))
    return res


def replay_live(r: LiveResult, match: MatchSettings, audio: AudioSettings) -> list[Decision]:
    """The real :class:`StreamMatcher` (live) over a stream's recorded windows, at ``match``."""
    return replay(r.stream_id, "live", r.recorded(), r.seconds, match, audio)


# ---------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Segment:
    """A closed set-list segment: reference, stream span, score."""

    ref: str
    start: float
    end: float
    score: float


def segments_of(decisions: Iterable[Decision]) -> list[Segment]:
    """The closed segments (``setlist_segment`` decisions; ``finish`` closes the open one)."""
    return [Segment(str(d.reference_id), d.stream_span[0], d.stream_span[1], float(d.score))
            for d in decisions if d.kind == "setlist_segment" and d.reference_id is not None]


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return min(a1, b1) - max(a0, b0)


@dataclass(frozen=True)
class PieceOutcome:
    """A catalogued piece of a set: found or not, and (found) the signed boundary errors of
    the segment on its reference that overlaps it most."""

    found: bool
    start_error: float = math.nan
    end_error: float = math.nan


def score_pieces(pieces: Sequence[Piece], segments: Sequence[Segment]) -> tuple[list[PieceOutcome], int]:
    """Each catalogued piece's outcome, and the wrong segments (on no overlapped piece's
    reference)."""
    out = []
    for p in pieces:
        if p.ref is None:
            continue
        mine = [(_overlap(p.start, p.end, s.start, s.end), s) for s in segments if s.ref == p.ref]
        mine = [(o, s) for o, s in mine if o > 0]
        if not mine:
            out.append(PieceOutcome(False))
            continue
        _, best = max(mine, key=lambda t: t[0])
        out.append(PieceOutcome(True, best.start - p.start, best.end - p.end))
    wrong = sum(not any(p.ref == s.ref and _overlap(p.start, p.end, s.start, s.end) > 0 for p in pieces)
                for s in segments)
    return out, wrong


@dataclass(frozen=True)
class LiveCell:
    """One grid point of the live sweep and what the replayed matcher gave there."""

    live_threshold: float
    chunk_threshold: float
    false_alarms: int  # segments opened on negative streams
    fa_per_hour: float
    pieces: int
    found: int
    wrong_segments: int  # on sets
    boundary_error_s: float  # median |start error| and |end error| of found pieces, together

    @property
    def recall(self) -> float:
        return self.found / self.pieces if self.pieces else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {"live_threshold": round(self.live_threshold, 4),
                "chunk_threshold": round(self.chunk_threshold, 4),
                "false_alarms": self.false_alarms, "fa_per_hour": round(self.fa_per_hour, 4),
                "recall": round(self.recall, 4), "found": self.found, "pieces": self.pieces,
                "wrong_segments": self.wrong_segments,
                "boundary_error_s": None if math.isnan(self.boundary_error_s)
                else round(self.boundary_error_s, 2)}


def hours(results: Sequence[LiveResult], kind: str = "negative") -> float:
    return sum(r.seconds for r in results if r.kind == kind) / 3600.0


def evaluate(results: Sequence[LiveResult], match: MatchSettings, audio: AudioSettings) -> LiveCell:
    """Replay every stream at ``match`` and count (module docstring)."""
    fa = found = n = wrong = 0
    errors: list[float] = []
    for r in results:
        decisions = replay_live(r, match, audio)
        if r.kind == "negative":
            fa += sum(d.kind == "match" for d in decisions)
            continue
        outcomes, w = score_pieces(r.pieces, segments_of(decisions))
        wrong += w
        n += len(outcomes)
        found += sum(o.found for o in outcomes)
        errors += [abs(e) for o in outcomes if o.found for e in (o.start_error, o.end_error)]
    neg_h = hours(results)
    return LiveCell(match.live_threshold, match.chunk_threshold, fa,
                    float(per_hour(np.array([fa]), neg_h)[0]) if neg_h > 0 else math.nan,
                    n, found, wrong, float(np.median(errors)) if errors else math.nan)


def live_sweep(results: Sequence[LiveResult], live_thresholds: Sequence[float],
               chunk_thresholds: Sequence[float], match: MatchSettings, audio: AudioSettings,
               advance: Callable[[], None] | None = None) -> list[LiveCell]:
    """Every grid point with ``chunk_threshold <= live_threshold`` (the settings' rule),
    replayed (:func:`evaluate`); ``advance`` is called after each."""
    cells = []
    for ct in chunk_thresholds:
        for lt in live_thresholds:
            if ct <= lt + 1e-12:
                cells.append(evaluate(results, match.model_copy(update={
                    "live_threshold": float(lt), "chunk_threshold": float(ct)}), audio))
            if advance is not None:
                advance()
    return cells


def choose(cells: Sequence[LiveCell], target_fa_per_hour: float,
           floor: float = -1.0) -> LiveCell | None:
    """The operating point: within the target and at a live threshold of at least ``floor``,
    the highest recall; then the fewest false alarms, the smallest boundary error, the
    highest live threshold. None: none is within."""
    ok = [c for c in cells if c.fa_per_hour <= target_fa_per_hour + 1e-12
          and c.live_threshold >= floor - 1e-9]
    if not ok:
        return None
    return max(ok, key=lambda c: (c.recall, -c.false_alarms,
                                  -(c.boundary_error_s if math.isfinite(c.boundary_error_s) else math.inf),
                                  c.live_threshold, c.chunk_threshold))


def live_curve(cells: Sequence[LiveCell], chunk_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Segment score -> false alarms per stream-hour at ``chunk_threshold``: the measured rate
    at each live threshold on the grid, non-increasing (each rate the highest measured at
    that threshold or above: a replay at a higher threshold can split one false segment in
    two). Scores strictly ascending, as :class:`~streamcover.match.calibration.Calibration`
    takes them."""
    row = sorted((c for c in cells if abs(c.chunk_threshold - chunk_threshold) < 1e-9),
                 key=lambda c: c.live_threshold)
    if not row:
        raise ValueError(f"no grid point at chunk threshold {chunk_threshold}")
    scores = np.array([round(c.live_threshold, 5) for c in row], np.float64)
    rates = np.array([c.fa_per_hour for c in row], np.float64)
    return scores, np.maximum.accumulate(rates[::-1])[::-1]


# ---------------------------------------------------------------------------- stream plans


def pack(durations: Sequence[float], target_s: float) -> list[list[int]]:
    """Consecutive items grouped into streams of at least ``target_s`` seconds (the last
    stream takes what is left)."""
    groups: list[list[int]] = []
    cur: list[int] = []
    total = 0.0
    for i, d in enumerate(durations):
        cur.append(i)
        total += d
        if total >= target_s:
            groups.append(cur)
            cur, total = [], 0.0
    if cur:
        groups.append(cur)
    return groups


def spread(refs: Sequence[str], rng: np.random.Generator) -> list[int]:
    """A random order of ``refs`` in which no two neighbours are equal where that can be
    had (each next item drawn among those unlike the previous one)."""
    left = list(rng.permutation(len(refs)))
    out: list[int] = []
    while left:
        pick = next((j for j, i in enumerate(left) if not out or refs[i] != refs[out[-1]]), 0)
        out.append(int(left.pop(pick)))
    return out
