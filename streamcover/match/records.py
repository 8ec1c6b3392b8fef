"""The records the stream matcher reads, keeps and returns (no rules: those are in
:mod:`streamcover.match.decision`).

* :class:`Hit`: what one search returns per candidate reference (the matcher's input);
* :class:`Decision` and :class:`SetListItem`: what it tells the world (the monitor turns a
  decision into an ``events.MatchEvent``);
* :class:`Chunk` and :class:`OpenMatch`: its state per query chunk and per open match or
  set-list segment, with the msgpack-friendly form of the latter for checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from streamcover.events import EventKind, SourceKind


class Hit(Protocol):
    """What the catalog search returns per candidate (catalog.search.SearchHit).

    Hits may also carry the stage scores ``maxmean`` and ``align_score`` (NaN or absent
    when not computed); decisions pass them on to events.
    """

    @property
    def reference_id(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...
    @property
    def alignment(self) -> Sequence[tuple[float, float, float]]: ...


@dataclass(frozen=True)
class Decision:
    """One thing to tell the world; the monitor turns it into an events.MatchEvent."""

    kind: EventKind
    event_id: str
    stream_id: str
    source: SourceKind
    reference_id: str | None
    reference: dict[str, str]
    score: float
    chunks_used: int
    stream_span: tuple[float, float]
    reference_span: tuple[float, float] | None
    window_index: int
    setlist: tuple[SetListItem, ...] = ()
    # Earlier set-list entries not in ``setlist`` (MatchEvent.setlist_omitted).
    setlist_omitted: int = 0
    # The stage scores behind ``score`` (None: not computed): stage-2 MaxMean, stage-3 alignment.
    maxmean: float | None = None
    alignment_score: float | None = None


@dataclass(frozen=True)
class SetListItem:
    """One song of a live stream's set list: a closed (or the open) segment."""

    reference_id: str
    reference: dict[str, str]
    start: float
    end: float
    score: float


@dataclass
class Chunk:
    """One query chunk of the stream and its best similarity to each reference."""

    index: int
    start: float
    end: float
    # reference id -> (sim, reference chunk start)
    sims: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class OpenMatch:
    """An open match (upload) or open set-list segment (live)."""

    reference_id: str
    reference: dict[str, str]
    start: float
    first_index: int
    last_index: int
    score: float
    emitted_score: float
    emitted_ref_span: float
    ref_span: tuple[float, float] | None
    misses: int = 0
    open: bool = True


def open_state(o: OpenMatch) -> dict[str, Any]:
    """``o`` as plain lists and dicts (msgpack-friendly; read back by :func:`open_from_state`)."""
    d = asdict(o)
    d["ref_span"] = list(o.ref_span) if o.ref_span else None
    return d


def open_from_state(d: Mapping[str, Any]) -> OpenMatch:
    """The :class:`OpenMatch` that :func:`open_state` wrote."""
    kw = dict(d)
    kw["ref_span"] = tuple(kw["ref_span"]) if kw.get("ref_span") else None
    kw["reference"] = dict(kw["reference"])
    return OpenMatch(**kw)

