"""What one batch reads (:class:`InRecord`) and what its one Kafka transaction writes
(:class:`Output`): the pipeline's only contact with Kafka, so it runs without a broker."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamcover.events import DeadLetter, MatchEvent


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
