"""The references' embedding rows in a catalog: segment files and the layout over them.

Every added batch's rows go into one float16 segment (``segments/seg-*.f16``,
``segments.py``); each reference names its segment, first row and chunk count, and each
chunk its row and start time. :meth:`CatalogRows.layout` turns that into the dense
per-key arrays (:class:`~streamcover.catalog.records.RefLayout`) that search and index
building read. :class:`CatalogRows` is the part of
:class:`~streamcover.catalog.store.Catalog` that maps, reads and compacts the rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np

from streamcover.catalog.database import (
    EMBEDDING_SEGMENTS,
    SEGMENT_DIR,
    map_recorded,
    record_segment,
    recorded_files,
    transaction,
    unlink_segments,
)
from streamcover.catalog.errors import CatalogCorruptError
from streamcover.catalog.meta import CatalogMeta
from streamcover.catalog.records import RefLayout
from streamcover.catalog.segments import map_segment, stored_crc, write_segment


class CatalogRows(CatalogMeta):
    """Embedding rows [n_chunks, D] per reference: mapping, reading, compacting them."""

    _segments: dict[int, np.memmap]

    def segment(self, seg_id: int, *, verify: bool = True) -> np.memmap:
        """The memory-mapped rows of a segment (checked once per process)."""
        mm = self._segments.get(seg_id)
        if mm is None:
            model_id = self.model_id
            mm = map_recorded(self._conn, self.path, EMBEDDING_SEGMENTS, seg_id,
                              lambda p: map_segment(p, verify=verify, model_id=model_id),
                              stored_crc if verify else None)
            self._segments[seg_id] = mm
        return mm

    def segments(self, *, verify: bool = True) -> dict[int, np.memmap]:
        ids = [int(r[0]) for r in self._conn.execute("SELECT id FROM segments ORDER BY id")]
        return {i: self.segment(i, verify=verify) for i in ids}

    def layout(self) -> RefLayout:
        """Per-reference arrays of the live references, for search and index building."""
        rows = self._conn.execute(
            "SELECT key, segment_id, row_start, n_chunks, added_version FROM refs "
            "WHERE tombstone = 0 ORDER BY key"
        ).fetchall()
        arr = np.array(rows, dtype=np.int64).reshape(-1, 5)
        size = int(arr[:, 0].max()) + 1 if len(arr) else 1
        seg = np.full(size, -1, np.int64)
        row_start = np.zeros(size, np.int64)
        n = np.zeros(size, np.int64)
        added = np.zeros(size, np.int64)
        base = np.zeros(size, np.int64)
        keys = arr[:, 0]
        seg[keys] = arr[:, 1]
        row_start[keys] = arr[:, 2]
        n[keys] = arr[:, 3]
        added[keys] = arr[:, 4]
        base[keys] = np.concatenate([[0], np.cumsum(arr[:, 3])[:-1]]) if len(arr) else []
        starts = np.array(
            [r[0] for r in self._conn.execute(
                "SELECT c.start_s FROM chunks c JOIN refs r ON r.key = c.ref_key "
                "WHERE r.tombstone = 0 ORDER BY c.ref_key, c.ordinal"
            )],
            dtype=np.float32,
        )
        if starts.shape[0] != int(n.sum()):
            raise CatalogCorruptError(
                f"catalog {self.path}: chunk table has {starts.shape[0]} rows for "
                f"{int(n.sum())} live chunks"
            )
        return RefLayout(keys, seg, row_start, n, added, base, starts)

    def ref_vectors(self, key: int, layout: RefLayout | None = None) -> np.ndarray:
        """float16 [n_chunks, D] embeddings of one live reference."""
        lay = layout or self.layout()
        n = int(lay.n_chunks[key]) if key < len(lay.n_chunks) else 0
        if n == 0:
            raise KeyError(f"reference key {key} is not live in catalog {self.path}")
        s = int(lay.row_start[key])
        return np.asarray(self.segment(int(lay.segment[key]))[s : s + n])

    def iter_live_vectors(
        self, layout: RefLayout, keys: np.ndarray | None = None, batch_rows: int = 65536
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (float32 vectors, ref keys, ordinals) in key order, in batches."""
        ks = layout.keys if keys is None else keys
        buf: list[np.ndarray] = []
        kbuf: list[np.ndarray] = []
        obuf: list[np.ndarray] = []
        have = 0
        for k in ks:
            v = self.ref_vectors(int(k), layout)
            buf.append(v)
            kbuf.append(np.full(v.shape[0], k, np.int64))
            obuf.append(np.arange(v.shape[0], dtype=np.int32))
            have += v.shape[0]
            if have >= batch_rows:
                yield (np.concatenate(buf).astype(np.float32), np.concatenate(kbuf),
                       np.concatenate(obuf))
                buf, kbuf, obuf, have = [], [], [], 0
        if buf:
            yield np.concatenate(buf).astype(np.float32), np.concatenate(kbuf), np.concatenate(obuf)

    # ------------------------------------------------------------------ writes

    def _register_segment(
        self, name: str, n_rows: int, dim: int, crc: int, nbytes: int
    ) -> tuple[int, int]:
        """Inside a transaction: bump the version and record a durable segment file.
        Returns (new version, segment id)."""
        version = self._bump()
        return version, record_segment(self._conn, EMBEDDING_SEGMENTS, name, (n_rows, dim),
                                       crc, nbytes, version)

    def _compact_rows(self, layout: RefLayout) -> dict[str, int]:
        """Rewrite the live references' rows (``layout``) into one segment: the file durable
        first, then one transaction that points them at it and drops tombstoned rows and the
        old segments, whose files are unlinked after the commit."""
        old = recorded_files(self._conn, EMBEDDING_SEGMENTS)
        if not old:
            return {"segments_before": 0, "segments_after": 0, "chunks": 0}
        model_id = self.model_id
        keys = layout.keys
        parts = [self.ref_vectors(int(k), layout) for k in keys]
        dim = self.dim or 0
        rows = np.concatenate(parts, axis=0) if parts else np.zeros((0, dim), np.float16)
        name = f"seg-{time.time_ns():020d}-{os.getpid()}.f16"
        crc, nbytes = write_segment(self.path / SEGMENT_DIR / name, rows, model_id or "")
        with transaction(self._conn):
            _, seg_id = self._register_segment(name, rows.shape[0], dim, crc, nbytes)
            row = 0
            for k in keys:
                n = int(layout.n_chunks[k])
                self._conn.execute(
                    "UPDATE refs SET segment_id = ?, row_start = ? WHERE key = ?",
                    (seg_id, row, int(k)),
                )
                self._conn.execute(
                    "UPDATE chunks SET segment_id = ?, row = ? + ordinal WHERE ref_key = ?",
                    (seg_id, row, int(k)),
                )
                row += n
            self._conn.execute(
                "DELETE FROM chunks WHERE ref_key IN (SELECT key FROM refs WHERE tombstone = 1)"
            )
            self._conn.execute("UPDATE refs SET segment_id = NULL WHERE tombstone = 1")
            self._conn.execute("DELETE FROM segments WHERE id != ?", (seg_id,))
        self._segments.clear()
        unlink_segments(self.path, EMBEDDING_SEGMENTS, (f for _, f in old))
        return {"segments_before": len(old), "segments_after": 1, "chunks": int(rows.shape[0])}
