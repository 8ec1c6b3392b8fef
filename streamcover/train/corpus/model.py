"""Plain records shared by discovery, planning and rendering (no I/O)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MemberKind = Literal["music21", "abc", "midi", "audio"]


@dataclass(frozen=True)
class Member:
    """One source rendition of a work: a score, a MIDI file or a recording.

    ``ref`` locates it: a music21 corpus path, ``path#X`` for one ABC tune, a file path.
    """

    key: str
    kind: MemberKind
    ref: str
    title: str
    collection: str = ""


@dataclass(frozen=True)
class Work:
    """A clique: every version rendered from any of its members is the same work."""

    work_id: str
    title: str
    artist: str
    source: str
    package: str
    members: tuple[Member, ...]
    # Recordings used only underneath other works are not works; kept here for symmetry.
    role: Literal["work", "background"] = "work"


@dataclass(frozen=True)
class PackageLicence:
    """One source package and the licence its material is used under."""

    package: str
    origin: str
    licence: str
    copyright_file: str = ""
    note: str = ""


@dataclass
class VersionParams:
    """Everything that makes one rendered version differ from another of the same work."""

    version: int
    member: str
    kind: MemberKind
    seed: int
    soundfont: str = ""
    transpose: int = 0
    tempo: float = 1.0
    start_offset_s: float = 0.0
    max_seconds: float = 120.0
    # Short tunes are played through again until at least this long (before tempo change).
    min_seconds: float = 45.0
    program_map: dict[int, int] = field(default_factory=dict)
    drop_voices: list[int] = field(default_factory=list)
    double_melody: bool = False
    melody_octave: int = 0
    bass_octave: int = 0
    accompaniment: str = "none"
    accompaniment_program: int = 0
    drums: bool = False
    effects: dict[str, float] = field(default_factory=dict)
    noise_snr_db: float | None = None
    background: str = ""
    background_db: float | None = None
    background_offset_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["program_map"] = {str(k): v for k, v in self.program_map.items()}
        return d
