"""A decision as the :class:`~streamcover.events.MatchEvent` the monitor emits: stamped with
the model and catalog, the calibrated false-alarm rate, and its latency from window close."""

from __future__ import annotations

import math
import time

from streamcover.config import MatchSettings
from streamcover.events import MatchEvent, SetListEntry, SourceKind, Span, event_id
from streamcover.match.decision import Decision
from streamcover.monitor.engine import Engine
from streamcover.monitor.metrics import Metrics


def match_event(d: Decision, closed_at: float | None, engine: Engine, match: MatchSettings,
                metrics: Metrics) -> MatchEvent:
    emitted = time.time()
    latency = max(0.0, (emitted - closed_at) * 1000.0) if closed_at is not None else 0.0
    if closed_at is not None:
        metrics.event_latency.observe(latency / 1000.0)
    metrics.events_out.labels(d.kind).inc()
    live = d.source == "live"
    fa, floor = None, False
    cal = engine.calibration
    # Live decisions take the live curve (MaxMean of the segment's chunks), when measured.
    curve = cal.for_decision(d.source, d.chunks_used) if cal is not None else None
    if curve is not None and d.reference_id is not None and math.isfinite(d.score):
        fa, floor = curve.false_alarms_per_hour(d.score), curve.at_floor(d.score)
    return MatchEvent(
        event_id=d.event_id, kind=d.kind, stream_id=d.stream_id, source=d.source,
        reference_id=d.reference_id, reference=d.reference, score=_finite(d.score),
        threshold=match.live_threshold if live else match.threshold, chunks_used=d.chunks_used,
        false_alarms_per_hour=fa, false_alarms_at_floor=floor, maxmean=d.maxmean,
        alignment_score=d.alignment_score, setlist_omitted=d.setlist_omitted,
        stream_span=Span(start=max(0.0, d.stream_span[0]), end=max(0.0, d.stream_span[1])),
        reference_span=(Span(start=max(0.0, d.reference_span[0]), end=max(0.0, d.reference_span[1]))
                        if d.reference_span else None),
        model_id=engine.model_id, catalog_version=engine.catalog_version,
        latency_ms=latency, emitted_at=emitted,
        setlist=[SetListEntry(reference_id=i.reference_id, title=i.reference.get("title"),
                              artist=i.reference.get("artist"),
                              stream_span=Span(start=max(0.0, i.start), end=max(0.0, i.end)),
                              score=_finite(i.score)) for i in d.setlist],
    )


def aborted(sid: str, source: SourceKind, index: int, end: float) -> Decision:
    """The end event of a stream that a fault closed before it had a verdict."""
    return Decision(
        kind="final", event_id=event_id(sid, "final", "aborted", index), stream_id=sid, source=source,
        reference_id=None, reference={}, score=0.0, chunks_used=0,
        stream_span=(0.0, max(end, 0.0) if math.isfinite(end) else 0.0), reference_span=None,
        window_index=index,
    )


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0
