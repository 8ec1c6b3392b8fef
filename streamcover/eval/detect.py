"""Open-set detection: run query streams through the monitor's search and decision code,
record each window's scores once, and sweep the threshold from them.

Per stream the loop is the monitor's (``streamcover/monitor/pipeline.py`` ``_run_jobs``): the stream's
features are cut into windows by ``streamcover.audio.chunking`` (``audio.window_seconds`` /
``hop_seconds``, tail and short-clip rules included), each window is embedded, registered
with a :class:`StreamMatcher` in upload mode, the matcher's query chunks are searched with
:class:`TwoStageSearcher` (with the stream's :class:`Stage1Memo`, and the accumulated
front-end features when the searcher takes ``query_features``), and the hits decided.

Why the sweep needs no re-search: in upload mode a reference's first ``match`` is emitted at
the first window where it is the top hit with a score ≥ threshold (and ≥ ``min_chunks``
chunks); a stream gets any event at all exactly when some window's top score reaches the
threshold. So two numbers per stream decide every operating point: the best score of the
correct reference while it is the top hit, and the best top score of any other reference.
The per-window top hits are kept too, so the chosen point is re-checked by replaying the
real :class:`StreamMatcher` (:func:`replay_events`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamcover.audio.chunking import chunk_features
from streamcover.catalog.search import TwoStageSearcher
from streamcover.catalog.view import Stage1Memo
from streamcover.config import AudioSettings, MatchSettings
from streamcover.events import SourceKind
from streamcover.match.decision import Decision, StreamMatcher

# Length classes of the query streams ("full" = the whole recording).
LENGTHS = ("10", "30", "60", "full")


@dataclass(frozen=True)
class QueryStream:
    """One upload to decide: its front-end features and what it should match (None: nothing)."""

    stream_id: str
    kind: str  # "reupload", "cover" or "negative"
    subset: str  # source set: "debian", "shs", "custom", or the negative's package
    length: str  # one of LENGTHS
    true_ref: str | None
    features: np.ndarray  # float32 [bins, T]
    fps: float

    @property
    def seconds(self) -> float:
        return self.features.shape[1] / self.fps

    @property
    def cls(self) -> str:
        """The class recall is reported for, e.g. ``reupload/30`` or ``cover/full``."""
        return f"{self.kind}/{self.length}"


@dataclass
class StreamResult:
    """What the monitor's loop saw on one stream, window by window."""

    stream_id: str
    kind: str
    subset: str
    length: str
    true_ref: str | None
    seconds: float
    used: list[int] = field(default_factory=list)  # query chunks per window
    top: list[list[tuple[str, float]]] = field(default_factory=list)  # per window: hits, best first
    true_score: list[float] = field(default_factory=list)  # correct reference's score (nan: not in hits)
    events: list[tuple[str, str | None, float]] = field(default_factory=list)  # (kind, ref, score)

    @property
    def cls(self) -> str:
        return f"{self.kind}/{self.length}"

    def best_true(self, min_chunks: int = 1, max_chunks: int | None = None) -> float:
        """Best score of the correct reference in windows where it is the top hit (-inf:
        never), over windows whose query had ``min_chunks``..``max_chunks`` chunks."""
        best = -math.inf
        for used, top in zip(self.used, self.top, strict=True):
            if min_chunks <= used <= (max_chunks or used) and top and self.true_ref is not None and top[0][0] == self.true_ref:
                best = max(best, top[0][1])
        return best

    def best_false(self, min_chunks: int = 1, max_chunks: int | None = None) -> float:
        """Best top score of any other reference (-inf: no window had a hit)."""
        best = -math.inf
        for used, top in zip(self.used, self.top, strict=True):
            if min_chunks <= used <= (max_chunks or used) and top and top[0][0] != self.true_ref:
                best = max(best, top[0][1])
        return best

    def to_json(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "kind": self.kind, "subset": self.subset,
                "length": self.length, "true_ref": self.true_ref, "seconds": round(self.seconds, 3),
                "used": self.used, "top": [[[r, round(s, 5)] for r, s in t] for t in self.top],
                "true_score": [None if math.isnan(s) else round(s, 5) for s in self.true_score],
                "events": [list(e) for e in self.events]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StreamResult:
        return cls(d["stream_id"], d["kind"], d["subset"], d["length"], d["true_ref"],
                   float(d["seconds"]), [int(u) for u in d["used"]],
                   [[(str(r), float(s)) for r, s in t] for t in d["top"]],
                   [math.nan if s is None else float(s) for s in d["true_score"]],
                   [(str(k), r, float(s)) for k, r, s in d["events"]])


def accepts_query_features(searcher: TwoStageSearcher) -> bool:
    """Whether this searcher's ``search`` takes the stage-3 ``query_features`` keyword."""
    return "query_features" in inspect.signature(searcher.search).parameters


@dataclass
class WindowStep:
    """One step of the monitor's loop over a stream: a window's query and its search hits
    (``hits`` None: the end of the stream), and the decisions the matcher made on them."""

    index: int
    start: float
    end: float
    query: list[int]  # the matcher's query chunk indices (the live horizon, or the upload's)
    query_starts: list[float]
    hits: list[Any] | None
    decisions: list[Decision]


def monitor_windows(stream_id: str, source: SourceKind, features: np.ndarray, fps: float,
                    embed: Any, searcher: TwoStageSearcher, audio: AudioSettings,
                    match: MatchSettings, top_n: int = 10) -> Iterator[WindowStep]:
    """The monitor's per-window loop over one stream (module docstring), for uploads and
    live streams alike: the query of each window is the matcher's own
    (:meth:`StreamMatcher.query_indices`: the live horizon, or the upload's accumulated
    chunks), searched with the stream's :class:`Stage1Memo`; stage 3 gets the features
    only for uploads, as the monitor gives them (``monitor/stream.py`` ``query_cap``).
    ``embed`` maps chunks [N, bins, T] to unit vectors [N, D]. The last step is the end of
    the stream (``hits`` None, the matcher's ``finish``)."""
    seconds = features.shape[1] / fps
    chunks, starts = chunk_features(features, fps, audio.window_seconds, audio.hop_seconds,
                                    audio.min_clip_seconds)
    matcher = StreamMatcher(stream_id, source, match, audio.window_seconds, audio.hop_seconds)
    if chunks.shape[0]:
        vectors = np.asarray(embed(chunks), dtype=np.float32)
        memo = Stage1Memo()
        with_feats = source == "upload" and accepts_query_features(searcher)
        frame_start = np.rint(starts * fps).astype(np.int64)
        for k in range(chunks.shape[0]):
            start = float(starts[k])
            end = start + chunks.shape[2] / fps
            matcher.add_chunk(k, start, end)
            q = matcher.query_indices()
            kw: dict[str, Any] = {"chunk_ids": list(q), "memo": memo, "top_n": top_n}
            if with_feats:
                lo = int(frame_start[q[0]])
                hi = int(frame_start[k]) + chunks.shape[2]
                kw["query_features"] = np.ascontiguousarray(features[:, lo:hi], dtype=np.float32)
            hits = searcher.search(vectors[q], starts[q], **kw)
            yield WindowStep(k, start, end, list(q), [float(starts[i]) for i in q], hits,
                             matcher.on_window(k, start, end, hits))
    n = chunks.shape[0]
    yield WindowStep(n, seconds, seconds, [], [], None, matcher.finish(seconds))


def run_stream(stream: QueryStream, embed: Any, searcher: TwoStageSearcher,
               audio: AudioSettings, match: MatchSettings, top_n: int = 10) -> StreamResult:
    """The monitor's per-window loop over one upload (:func:`monitor_windows`), recorded."""
    res = StreamResult(stream.stream_id, stream.kind, stream.subset, stream.length,
                       stream.true_ref, stream.seconds)
    for step in monitor_windows(stream.stream_id, "upload", stream.features, stream.fps, embed,
                                searcher, audio, match, top_n):
        if step.hits is not None:
            res.used.append(len(step.query))
            res.top.append([(h.reference_id, float(h.score)) for h in step.hits])
            res.true_score.append(next((float(h.score) for h in step.hits
                                        if h.reference_id == stream.true_ref), math.nan))
        res.events.extend(_events(step.decisions))
    return res


def _events(decisions: Iterable[Decision]) -> list[tuple[str, str | None, float]]:
    return [(d.kind, d.reference_id, float(d.score)) for d in decisions]


@dataclass(frozen=True)
class RecordedHit:
    """A recorded hit, for :func:`replay` (upload decisions do not use the alignment; live
    ones do: ``(query_start_s, ref_chunk_start_s, sim)`` per query chunk)."""

    reference_id: str
    score: float
    metadata: Mapping[str, Any] = field(default_factory=dict)
    alignment: Sequence[tuple[float, float, float]] = ()


def replay_events(r: StreamResult, match: MatchSettings, audio: AudioSettings) -> list[Decision]:
    """The real :class:`StreamMatcher` run again over a stream's recorded hits, at other
    match settings: the check of an operating point chosen by the sweep."""
    windows = [(k * audio.hop_seconds, k * audio.hop_seconds + audio.window_seconds,
                [RecordedHit(ref, s) for ref, s in top]) for k, top in enumerate(r.top)]
    return replay(r.stream_id, "upload", windows, r.seconds, match, audio)


def replay(stream_id: str, source: SourceKind,
           windows: Sequence[tuple[float, float, Sequence[Any]]], seconds: float,
           match: MatchSettings, audio: AudioSettings) -> list[Decision]:
    """A fresh :class:`StreamMatcher` over recorded windows ``(start, end, hits)``, then its
    end of stream at ``seconds``: every decision it makes."""
    m = StreamMatcher(stream_id, source, match, audio.window_seconds, audio.hop_seconds)
    out: list[Decision] = []
    for k, (start, end, hits) in enumerate(windows):
        m.add_chunk(k, start, end)
        out.extend(m.on_window(k, start, end, hits))
    out.extend(m.finish(seconds))
    return out


# ---------------------------------------------------------------------------- the sweep


def false_alarm_counts(best_false: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Negative streams with an event at each threshold (their best top score ≥ it)."""
    s = np.sort(np.asarray(best_false, np.float64))
    return (s.size - np.searchsorted(s, thresholds, side="left")).astype(np.int64)


def per_hour(counts: np.ndarray, hours: float) -> np.ndarray:
    """Counts over ``hours`` of stream audio (the measured false alarms per stream-hour)."""
    if hours <= 0:
        raise ValueError(f"need a positive number of negative hours, got {hours}")
    return np.asarray(counts, np.float64) / hours


def recall_at(best_true: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of positive streams detected on their reference at each threshold."""
    s = np.sort(np.asarray(best_true, np.float64))
    if s.size == 0:
        return np.full(len(thresholds), math.nan)
    return (s.size - np.searchsorted(s, thresholds, side="left")) / s.size


@dataclass
class Sweep:
    """False alarms per stream-hour and recall per class over a threshold grid."""

    thresholds: np.ndarray
    negative_hours: float
    negative_streams: int
    fa_counts: np.ndarray
    fa_per_hour: np.ndarray
    recall: dict[str, np.ndarray]  # class -> recall per threshold
    positives: dict[str, int]  # class -> streams
    wrong_counts: np.ndarray  # positive streams with an event on another reference
    negative_best: np.ndarray  # each negative stream's best top score

    def operating_point(self, target_fa_per_hour: float) -> int:
        """Index of the lowest threshold whose measured rate is within the target."""
        ok = np.flatnonzero(self.fa_per_hour <= target_fa_per_hour + 1e-12)
        if ok.size == 0:
            raise ValueError(f"no threshold on the grid reaches {target_fa_per_hour} false alarms/h")
        return int(ok[0])

    def row(self, i: int) -> dict[str, Any]:
        return {"threshold": round(float(self.thresholds[i]), 4),
                "false_alarms": int(self.fa_counts[i]),
                "fa_per_hour": round(float(self.fa_per_hour[i]), 4),
                "wrong_reference_events": int(self.wrong_counts[i]),
                "recall": {c: round(float(v[i]), 4) for c, v in sorted(self.recall.items())}}


def class_keys(r: StreamResult) -> list[str]:
    """The recall classes a positive stream counts in (all covers, and per cover set)."""
    keys = [r.cls]
    if r.kind == "cover":
        keys.append(f"cover-{r.subset}/{r.length}")
    return keys


def sweep(results: Sequence[StreamResult], thresholds: np.ndarray, min_chunks: int = 1) -> Sweep:
    """The threshold sweep from recorded streams (module docstring)."""
    thr = np.asarray(thresholds, np.float64)
    neg = [r for r in results if r.kind == "negative"]
    pos = [r for r in results if r.kind != "negative"]
    hours = sum(r.seconds for r in neg) / 3600.0
    nb = np.array([r.best_false(min_chunks) for r in neg], np.float64)
    counts = false_alarm_counts(nb, thr)
    by_cls: dict[str, list[float]] = {}
    for r in pos:
        for key in class_keys(r):
            by_cls.setdefault(key, []).append(r.best_true(min_chunks))
    recall = {c: recall_at(np.array(v), thr) for c, v in by_cls.items()}
    wrong = false_alarm_counts(np.array([r.best_false(min_chunks) for r in pos], np.float64), thr)
    return Sweep(thr, hours, len(neg), counts, per_hour(counts, hours) if hours > 0 else
                 np.full(thr.size, math.nan), recall, {c: len(v) for c, v in by_cls.items()},
                 wrong, nb)


@dataclass
class TwoPoint:
    """Upload thresholds for one-chunk queries and for longer ones (``match.one_chunk_threshold``,
    ``match.threshold``), and what they give on the recorded streams."""

    one_chunk: float
    many: float
    false_alarms: int
    fa_per_hour: float
    recall: dict[str, float]
    wrong_reference_events: int


def _detects(one: float, many: float, t1: float, t2: float) -> bool:
    return one >= t1 or many >= t2


def two_point(results: Sequence[StreamResult], thresholds: np.ndarray,
              target_fa_per_hour: float, floor: tuple[float, float] = (-1.0, -1.0)) -> TwoPoint:
    """The lowest threshold for queries of two chunks or more whose negatives stay within
    the target on their own, then the lowest one-chunk threshold that keeps the pair within
    it; neither below ``floor`` (one-chunk, two or more: a margin the caller measured for
    what the recorded catalog lacks). Raises ValueError when no pair on the grid does."""
    neg = [r for r in results if r.kind == "negative"]
    hours = sum(r.seconds for r in neg) / 3600.0
    if hours <= 0:
        raise ValueError("no negative audio")
    one = np.array([r.best_false(1, 1) for r in neg])
    many = np.array([r.best_false(2) for r in neg])
    allowed = target_fa_per_hour * hours + 1e-9
    thr = np.asarray(thresholds, np.float64)
    t2s = [t for t in thr if t >= floor[1] - 1e-9 and (many >= t).sum() <= allowed]
    if not t2s:
        raise ValueError(f"no threshold on the grid reaches {target_fa_per_hour} false alarms/h")
    t2 = float(t2s[0])
    t1s = [t for t in thr if t >= floor[0] - 1e-9
           and sum(_detects(a, b, t, t2) for a, b in zip(one, many, strict=True)) <= allowed]
    if not t1s:
        raise ValueError(f"no one-chunk threshold reaches {target_fa_per_hour} false alarms/h")
    t1 = float(t1s[0])
    fa = int(sum(_detects(a, b, t1, t2) for a, b in zip(one, many, strict=True)))
    by_cls: dict[str, list[bool]] = {}
    wrong = 0
    for r in results:
        if r.kind == "negative":
            continue
        hit = _detects(r.best_true(1, 1), r.best_true(2), t1, t2)
        wrong += _detects(r.best_false(1, 1), r.best_false(2), t1, t2)
        for key in class_keys(r):
            by_cls.setdefault(key, []).append(hit)
    return TwoPoint(t1, t2, fa, fa / hours, {c: float(np.mean(v)) for c, v in sorted(by_cls.items())},
                    wrong)


@dataclass
class Verification:
    """The real matcher replayed at the chosen settings, against what the sweep predicted."""

    false_alarm_events: int  # match events on negative streams
    negative_streams_with_events: int
    detected: dict[str, int]  # class -> streams with a match on their reference
    wrong_reference_events: int
    disagreements: list[str]  # streams where the replay and the sweep differ


def verify(results: Sequence[StreamResult], match: MatchSettings, audio: AudioSettings) -> Verification:
    """Replay every stream through :class:`StreamMatcher` at ``match`` (module docstring)."""
    v = Verification(0, 0, {}, 0, [])
    for r in results:
        matches = [d for d in replay_events(r, match, audio) if d.kind == "match"]
        if r.kind == "negative":
            v.false_alarm_events += len(matches)
            v.negative_streams_with_events += bool(matches)
            predicted = _predicted(r.best_false, match)
            if predicted != bool(matches):
                v.disagreements.append(r.stream_id)
            continue
        hit = any(d.reference_id == r.true_ref for d in matches)
        v.wrong_reference_events += sum(d.reference_id != r.true_ref for d in matches)
        for key in class_keys(r):
            v.detected[key] = v.detected.get(key, 0) + int(hit)
        if hit != _predicted(r.best_true, match):
            v.disagreements.append(r.stream_id)
    return v


def _predicted(best: Any, match: MatchSettings) -> bool:
    """Whether the sweep predicts an event: a one-chunk window at ``one_chunk_threshold``, a
    longer one at ``threshold`` (``best`` is a stream's best_true or best_false)."""
    one = best(match.min_chunks, 1) if match.min_chunks <= 1 else -math.inf
    return bool(one >= match.one_chunk_threshold or best(max(2, match.min_chunks)) >= match.threshold)
