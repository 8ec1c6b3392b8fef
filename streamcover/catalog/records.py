"""What goes into the catalog and what comes out: references, their layout and checks.

The dense per-key arrays (:class:`RefLayout`, :class:`FeatureStore`) are what the search
hot path and the index builder read, so they are plain numpy arrays indexed by reference
key, never per-reference Python objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# `extra` fields are copied into every match event, which must fit the broker's
# max.message.bytes; this caps their JSON encoding per reference (catalog.max_extra_bytes).
MAX_EXTRA_BYTES = 4096

# Rows are L2-normalised before storage; anything this far from unit norm is rejected
# (NaN, inf, all-zero), because it would poison the inner-product index silently.
_MIN_NORM = 1e-6


def normalise_rows(vectors: np.ndarray, what: str) -> np.ndarray:
    """Return float32 L2-normalised rows; refuse NaN/inf/zero rows with a clear error."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array [N, D], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: embeddings contain NaN or inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if x.shape[0] and float(norms.min()) < _MIN_NORM:
        raise ValueError(f"{what}: embeddings contain an all-zero row")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def extra_bytes(extra: dict[str, Any]) -> int:
    """Size of ``extra`` as stored and as carried by events (UTF-8 JSON)."""
    return len(json.dumps(extra, sort_keys=True, default=str).encode("utf-8"))


def check_extra(extra: dict[str, Any], what: str, limit: int = MAX_EXTRA_BYTES) -> None:
    """Refuse ``extra`` metadata over ``limit`` bytes: it is copied into every match event."""
    size = extra_bytes(extra)
    if size > limit:
        raise ValueError(
            f"{what}: extra metadata is {size:,} bytes of JSON, over the {limit:,}-byte limit "
            "(catalog.max_extra_bytes); it is copied into every match event, which must fit "
            "the broker's max.message.bytes"
        )


@dataclass(frozen=True)
class ReferenceInput:
    """One reference to add: its embeddings plus metadata."""

    id: str
    vectors: np.ndarray  # [N, D] float, normalised on write
    starts: np.ndarray  # [N] chunk start times in seconds
    title: str | None = None
    artist: str | None = None
    rights_holder: str | None = None
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    content_hash: str | None = None
    source_path: str | None = None
    # The front end's feature sequence [bins, T] (float in 0..1, or uint8) that the
    # embeddings came from, stored quantised for stage-3 alignment; None: not stored.
    features: np.ndarray | None = None


@dataclass(frozen=True)
class Reference:
    """A reference as stored (no embeddings)."""

    key: int
    id: str
    title: str | None
    artist: str | None
    rights_holder: str | None
    duration: float | None
    extra: dict[str, Any]
    content_hash: str | None
    source_path: str | None
    added_at: str
    added_version: int
    tombstone: bool
    n_chunks: int

    def metadata(self) -> dict[str, Any]:
        """The fields a match event carries about the reference."""
        return {
            "id": self.id,
            "title": self.title,
            "artist": self.artist,
            "rights_holder": self.rights_holder,
            "duration": self.duration,
            **self.extra,
        }


@dataclass(frozen=True)
class AddResult:
    added: list[str]
    skipped: list[str]
    version: int


@dataclass(frozen=True)
class RefLayout:
    """Dense per-reference arrays for the search hot path, indexed by reference key."""

    keys: np.ndarray  # [R] int64 live reference keys, ascending
    segment: np.ndarray  # [max_key+1] int64 segment id (-1 = absent)
    row_start: np.ndarray  # [max_key+1] int64
    n_chunks: np.ndarray  # [max_key+1] int64 (0 = absent or removed)
    added_version: np.ndarray  # [max_key+1] int64
    chunk_base: np.ndarray  # [max_key+1] int64 offset into ``starts``
    starts: np.ndarray  # [total live chunks] float32, per reference in ordinal order


def live_mask(keys: np.ndarray, n_chunks: np.ndarray) -> np.ndarray:
    """Which of ``keys`` name live references, given ``RefLayout.n_chunks`` (indexed by
    key; 0 for removed ones, and keys past its end are unknown to the layout)."""
    keys = np.asarray(keys)
    inside = (keys >= 0) & (keys < n_chunks.shape[0])
    if not n_chunks.size:
        return inside
    return inside & (n_chunks[np.where(inside, keys, 0)] > 0)


@dataclass(frozen=True)
class FeatureStore:
    """Stored feature sequences of the live references, by reference key (stage 3).

    Arrays are indexed by key like :class:`RefLayout`; ``segments`` are read-only memory
    maps, so :meth:`get` returns a view and copies nothing.
    """

    segment: np.ndarray  # [max_key+1] int64 feature segment id (-1 = none stored)
    frame_start: np.ndarray  # [max_key+1] int64
    frames: np.ndarray  # [max_key+1] int64 (0 = none stored)
    scale: np.ndarray  # [max_key+1] float32: x ~= q / 255 * scale
    segments: dict[int, np.ndarray]
    fps: float | None  # frames per second of every stored sequence
    bins: int | None

    @classmethod
    def empty(cls) -> FeatureStore:
        z = np.zeros(0, np.int64)
        return cls(z, z, z, np.zeros(0, np.float32), {}, None, None)

    def has(self, key: int) -> bool:
        return 0 <= key < self.frames.shape[0] and bool(self.frames[key] > 0)

    def get(self, key: int) -> np.ndarray:
        """uint8 frames [T, bins] of reference ``key`` (a view into the map); KeyError if
        it has none stored."""
        if not self.has(key):
            raise KeyError(f"reference key {key} has no stored features")
        s = int(self.frame_start[key])
        return self.segments[int(self.segment[key])][s : s + int(self.frames[key])]

    @property
    def n_references(self) -> int:
        return int((self.frames > 0).sum())

