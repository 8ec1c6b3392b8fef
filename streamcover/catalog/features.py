"""The references' stored feature frames (for stage-3 alignment) in a catalog.

Each reference added with features gets its front end's frames quantised to uint8 and
appended to the batch's feature segment (``features/fseg-*.u8``, ``segments.py``), with a
``ref_features`` row naming its segment, first frame, length and scale. They are written
in the same order as the embeddings (file durable first, then the one transaction that
adds the reference), so they too are visible only once both are durable. A catalog
written before features were stored has no feature tables and reads as having none.
:class:`CatalogFeatures` is the part of :class:`~streamcover.catalog.store.Catalog` that
keeps them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from streamcover.catalog.database import (
    FEATURE_DIR,
    FEATURE_SEGMENTS,
    map_recorded,
    record_segment,
    recorded_files,
    transaction,
    unlink_segments,
)
from streamcover.catalog.errors import CatalogCorruptError
from streamcover.catalog.meta import CatalogMeta
from streamcover.catalog.records import FeatureStore, ReferenceInput
from streamcover.catalog.segments import (
    FEATURE_FORMAT,
    map_feature_segment,
    quantize_features,
    read_feature_header,
    write_feature_segment,
)


class StagedFeatures(NamedTuple):
    """A batch's feature segment, durable on disk and not yet recorded."""

    name: str
    frames: np.ndarray
    fps: float
    crc: int
    nbytes: int


def _header_crc(path: Path) -> int:
    return read_feature_header(path)[2]


class CatalogFeatures(CatalogMeta):
    """Stored feature frames [T, bins] per reference: adding, reading, compacting them."""

    _feature_maps: dict[int, np.ndarray]

    def _has_feature_tables(self) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ref_features'"
        ).fetchone()
        return row is not None

    # ------------------------------------------------------------------ writes

    @staticmethod
    def _feature_rows(
        r: ReferenceInput, starts: np.ndarray, fps: float | None
    ) -> tuple[np.ndarray, float]:
        """Quantised frames of one reference, checked against its chunk starts."""
        what = f"reference {r.id!r}"
        if fps is None or not fps > 0:
            raise ValueError(f"{what}: features given without a positive feature_fps")
        assert r.features is not None
        q, scale = quantize_features(r.features, what)
        if float(starts.max()) > q.shape[0] / fps + 1e-6:
            raise ValueError(
                f"{what}: {q.shape[0]} feature frames ({q.shape[0] / fps:.1f} s) end before "
                f"its last chunk start ({float(starts.max()):.1f} s)"
            )
        return q, scale

    @staticmethod
    def _feature_bins(feats: Sequence[tuple[np.ndarray, float]]) -> int:
        """The width of a batch's feature frames (0 for none); one width per batch."""
        bins = feats[0][0].shape[1] if feats else 0
        if any(f[0].shape[1] != bins for f in feats):
            raise ValueError("all references in one batch must have the same number of feature bins")
        return int(bins)

    def _check_feature_meta(self, fps: float | None, bins: int) -> None:
        """Refuse features at another frame rate or width than the catalog's."""
        assert fps is not None
        self._check_meta("feature_fps", fps, "features at frames/s")
        self._check_meta("feature_bins", bins, "features of bins")

    def _stage_features(
        self, feats: Sequence[tuple[np.ndarray, float]], fps: float | None, stamp: str
    ) -> StagedFeatures | None:
        """Write a batch's frames durably as one feature segment (None: the batch has none)."""
        if not feats:
            return None
        assert fps is not None
        name = f"fseg-{stamp}.u8"
        frames = np.concatenate([f[0] for f in feats])
        crc, nbytes = write_feature_segment(self.path / FEATURE_DIR / name,
                                            frames, fps)
        return StagedFeatures(name, frames, fps, crc, nbytes)

    def _register_features(self, staged: StagedFeatures, version: int) -> int:
        """Inside the add's transaction: bind the frame rate and width, record the segment."""
        self._bind_meta("feature_fps", staged.fps, "features at frames/s")
        self._bind_meta("feature_bins", staged.frames.shape[1], "features of bins")
        return record_segment(self._conn, FEATURE_SEGMENTS, staged.name, staged.frames.shape,
                              staged.crc, staged.nbytes, version)

    def _compact_features(self, keys: np.ndarray) -> None:
        """Rewrite the live references' stored features into one feature segment (same
        order of writes as the embeddings: file durable first, then one transaction)."""
        old = recorded_files(self._conn, FEATURE_SEGMENTS)
        if not old:
            return
        store = self.features()
        live = [int(k) for k in keys if store.has(int(k))]
        bins = int(store.bins or 0)
        parts = [store.get(k) for k in live]
        frames = np.concatenate(parts) if parts else np.zeros((0, bins), np.uint8)
        name = f"fseg-{time.time_ns():020d}-{os.getpid()}.u8"
        crc, nbytes = write_feature_segment(self.path / FEATURE_DIR / name,
                                            frames, float(store.fps or 0.0))
        with transaction(self._conn):
            fseg_id = record_segment(self._conn, FEATURE_SEGMENTS, name, (frames.shape[0], bins),
                                     crc, nbytes, self.version)
            start = 0
            for k, part in zip(live, parts, strict=True):
                self._conn.execute(
                    "UPDATE ref_features SET segment_id = ?, frame_start = ? WHERE ref_key = ?",
                    (fseg_id, start, k),
                )
                start += part.shape[0]
            self._conn.execute(
                "DELETE FROM ref_features WHERE ref_key IN (SELECT key FROM refs WHERE tombstone = 1)"
            )
            self._conn.execute("DELETE FROM feature_segments WHERE id != ?", (fseg_id,))
        self._feature_maps.clear()
        unlink_segments(self.path, FEATURE_SEGMENTS, (f for _, f in old))

    # ------------------------------------------------------------------ reads

    def _feature_stats(self) -> dict[str, Any]:
        if not self._has_feature_tables():
            return {"feature_references": 0, "feature_frames": 0, "feature_bytes": 0,
                    "feature_format": None, "feature_fps": None}
        n, frames = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(f.frames), 0) FROM ref_features f "
            "JOIN refs r ON r.key = f.ref_key WHERE r.tombstone = 0"
        ).fetchone()
        nbytes = self._conn.execute(
            "SELECT COALESCE(SUM(bytes), 0) FROM feature_segments").fetchone()[0]
        return {"feature_references": int(n), "feature_frames": int(frames),
                "feature_bytes": int(nbytes),
                "feature_format": FEATURE_FORMAT if int(n) else None,
                "feature_fps": self.feature_fps}

    def feature_segment(self, seg_id: int, *, verify: bool = True) -> np.ndarray:
        """The memory-mapped frames [T, bins] of a feature segment (checked once per process)."""
        mm = self._feature_maps.get(seg_id)
        if mm is None:
            mm = map_recorded(self._conn, self.path, FEATURE_SEGMENTS, seg_id,
                              lambda p: map_feature_segment(p, verify=verify), _header_crc)
            self._feature_maps[seg_id] = mm
        return mm

    def features(self, *, verify: bool = True) -> FeatureStore:
        """The stored feature sequences of the live references (empty for a catalog that
        has none, including one written before features were stored)."""
        if not self._has_feature_tables():
            return FeatureStore.empty()
        rows = self._conn.execute(
            "SELECT f.ref_key, f.segment_id, f.frame_start, f.frames, f.scale "
            "FROM ref_features f JOIN refs r ON r.key = f.ref_key WHERE r.tombstone = 0"
        ).fetchall()
        if not rows:
            return FeatureStore.empty()
        arr = np.array([r[:4] for r in rows], dtype=np.int64)
        size = int(arr[:, 0].max()) + 1
        seg = np.full(size, -1, np.int64)
        start = np.zeros(size, np.int64)
        frames = np.zeros(size, np.int64)
        scale = np.zeros(size, np.float32)
        k = arr[:, 0]
        seg[k], start[k], frames[k] = arr[:, 1], arr[:, 2], arr[:, 3]
        scale[k] = [r[4] for r in rows]
        maps = {int(i): self.feature_segment(int(i), verify=verify) for i in np.unique(arr[:, 1])}
        for i, m in maps.items():
            sel = arr[:, 1] == i
            if int((arr[sel, 2] + arr[sel, 3]).max()) > m.shape[0]:
                raise CatalogCorruptError(
                    f"catalog {self.path}: references point past the end of feature segment {i}")
        bins = self._meta("feature_bins")
        return FeatureStore(seg, start, frames, scale, maps, self.feature_fps,
                            None if bins is None else int(float(bins)))

    def _verify_features(self) -> int:
        """Check every feature segment's length and checksum; returns how many there are."""
        self._feature_maps.clear()
        if not self._has_feature_tables():
            return 0
        ids = [i for i, _ in recorded_files(self._conn, FEATURE_SEGMENTS)]
        for i in ids:
            self.feature_segment(i, verify=True)
        self.features(verify=False)
        return len(ids)
