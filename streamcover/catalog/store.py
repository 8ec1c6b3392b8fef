"""The reference catalog on disk: SQLite (WAL) metadata plus float16 embedding segments.

Layout of a catalog directory::

    catalog.sqlite (+ -wal, -shm)   references, chunks, segments, meta (model id, dim, version)
    segments/seg-000001.f16         immutable, checksummed float16 rows, memory-mapped for reads
    features/fseg-000001.u8         immutable, checksummed uint8 feature frames [T, bins] per
                                    reference (stage-3 alignment), memory-mapped for reads
    snapshots/<name>/               immutable index snapshots (see ``snapshot.py``)
    CURRENT                         name of the snapshot a monitor should serve
    LOCK                            held (flock) by the single writer

Why this shape: a segment file is written to a temporary name, fsynced and renamed
before the SQLite transaction that references it commits, so a reference becomes
visible only when both its embeddings and its metadata are durable. A crash in
between leaves an orphan segment that the next writer deletes; the reference ids
that did commit are skipped on resume, so re-running an interrupted ``add`` adds
no duplicates. Every segment carries its length and a CRC32, checked when it is
mapped, so a truncated or corrupt file raises :class:`CatalogCorruptError` rather
than feeding wrong vectors to the search.

:class:`Catalog` is one class over one schema (``database.py``); here are opening it and
its references (adding, removing, reading them). Its other parts are mixins in their own
modules: what it is bound to (``meta.py``), the embedding rows (``rows.py``) and the stored
feature frames (``features.py``); the segment format (``segments.py``), the records
(``records.py``) and the errors (``errors.py``) live apart too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamcover.catalog.database import (
    CURRENT_FILE,
    DB_NAME,
    EMBEDDING_SEGMENTS,
    FEATURE_DIR,
    FEATURE_SEGMENTS,
    LOCK_FILE,
    REF_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    SEGMENT_DIR,
    SNAPSHOT_DIR,
    Mode,
    now,
    remove_unrecorded,
    transaction,
)
from streamcover.catalog.errors import (
    CatalogCorruptError,
    CatalogError,
    CatalogLockedError,
    CatalogNotFoundError,
)
from streamcover.catalog.features import CatalogFeatures
from streamcover.catalog.records import (
    MAX_EXTRA_BYTES,
    AddResult,
    Reference,
    ReferenceInput,
    check_extra,
    normalise_rows,
)
from streamcover.catalog.rows import CatalogRows
from streamcover.catalog.segments import FEATURE_FORMAT, write_segment
from streamcover.files import try_lock

# Re-exported: callers name the directory layout and the formats through this module.
__all__ = [
    "CURRENT_FILE",
    "DB_NAME",
    "FEATURE_DIR",
    "FEATURE_FORMAT",
    "LOCK_FILE",
    "SCHEMA_VERSION",
    "SEGMENT_DIR",
    "SNAPSHOT_DIR",
    "Catalog",
    "Mode",
    "ReferenceInput",
]


class Catalog(CatalogRows, CatalogFeatures):
    """A catalog directory. One writer at a time (flock); any number of readers (WAL)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, mode: Mode, lock_fd: int | None):
        self.path = path
        self.mode: Mode = mode
        self._conn = conn
        self._lock_fd = lock_fd
        self._segments: dict[int, np.memmap] = {}
        self._feature_maps: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        mode: Mode = "r",
        *,
        model_id: str | None = None,
        dim: int | None = None,
    ) -> Catalog:
        """Open (``r``), open-or-create (``a``) or create-empty (``w``) the catalog at ``path``.

        ``model_id``/``dim`` are recorded on creation; when given for an existing
        catalog they must match, otherwise :class:`ModelMismatchError`.
        """
        root = Path(path)
        db = root / DB_NAME
        if mode == "r" and not db.exists():
            raise CatalogNotFoundError(f"no catalog at {root} (missing {DB_NAME})")
        if mode == "w" and db.exists():
            raise CatalogError(f"catalog {root} already exists; refusing to overwrite it")
        lock_fd: int | None = None
        if mode in ("a", "w"):
            root.mkdir(parents=True, exist_ok=True)
            (root / SEGMENT_DIR).mkdir(exist_ok=True)
            (root / SNAPSHOT_DIR).mkdir(exist_ok=True)
            (root / FEATURE_DIR).mkdir(exist_ok=True)
            lock_fd = try_lock(root / LOCK_FILE)
            if lock_fd is None:
                raise CatalogLockedError(
                    f"catalog {root} is being written by another process (LOCK is held)"
                )
        try:
            uri = f"file:{db}?mode=ro" if mode == "r" else f"file:{db}"
            conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute("PRAGMA busy_timeout=30000")
                if mode != "r":
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=FULL")
                    conn.executescript(SCHEMA)
                    with transaction(conn):
                        conn.execute(
                            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                            (str(SCHEMA_VERSION),),
                        )
                        conn.execute("INSERT OR IGNORE INTO meta VALUES ('version', '0')")
                        conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (now(),))
                cat = cls(root, conn, mode, lock_fd)
                schema = cat._meta("schema_version")
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise CatalogCorruptError(f"catalog database {db} is unreadable: {exc}") from exc
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        if schema != str(SCHEMA_VERSION):
            cat.close()
            raise CatalogError(f"catalog {root} has schema {schema}, this code reads {SCHEMA_VERSION}")
        if model_id is not None or dim is not None:
            cat._bind_model(model_id, dim)
        if mode != "r":
            cat._remove_orphans()
        return cat

    def close(self) -> None:
        self._segments.clear()
        self._feature_maps.clear()
        self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def _require_writer(self) -> None:
        if self.mode == "r":
            raise CatalogError(f"catalog {self.path} was opened read-only")

    def _remove_orphans(self) -> None:
        """Delete segment files no committed row points at (a crash before commit) and temp files."""
        for kind in (EMBEDDING_SEGMENTS, FEATURE_SEGMENTS):
            remove_unrecorded(self._conn, self.path, kind)
        snap_dir = self.path / SNAPSHOT_DIR
        for p in snap_dir.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """One consistent read transaction (a WAL snapshot) for several queries."""
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("COMMIT")

    def has_reference(self, ref_id: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM refs WHERE id = ? AND tombstone = 0", (ref_id,)
        ).fetchone()
        return row is not None

    def live_ids(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT id FROM refs WHERE tombstone = 0")}

    def find_by_hash(self, content_hash: str) -> str | None:
        row = self._conn.execute(
            "SELECT id FROM refs WHERE content_hash = ? AND tombstone = 0", (content_hash,)
        ).fetchone()
        return None if row is None else str(row[0])

    def add_references(
        self,
        refs: Sequence[ReferenceInput],
        model_id: str,
        *,
        reference_hop_s: float | None = None,
        reference_speeds: Sequence[float] | None = None,
        feature_fps: float | None = None,
        max_extra_bytes: int = MAX_EXTRA_BYTES,
    ) -> AddResult:
        """Add a batch durably: new segment files, then one SQLite transaction.

        Ids already live are skipped (idempotent resume). Model id and dimension are
        checked against the catalog's; the first add binds them, and likewise
        ``reference_hop_s`` (the hop the references were chunked at), ``reference_speeds``
        (the speed renders among their chunks, :func:`~streamcover.catalog.ingest.embed_reference`;
        given with the hop) and ``feature_fps`` (the frame rate of ``ReferenceInput.features``,
        required when any are given).
        """
        self._require_writer()
        self.check_model(model_id, "embeddings being added")
        todo: list[ReferenceInput] = []
        skipped: list[str] = []
        seen: set[str] = set()
        for r in refs:
            if not r.id:
                raise ValueError("reference id must be a non-empty string")
            if r.id in seen or self.has_reference(r.id):
                skipped.append(r.id)
                continue
            seen.add(r.id)
            todo.append(r)
        if not todo:
            return AddResult([], skipped, self.version)
        mats = []
        feats: list[tuple[np.ndarray, float] | None] = []
        for r in todo:
            what = f"reference {r.id!r}"
            v = normalise_rows(r.vectors, what)
            if v.shape[0] == 0:
                raise ValueError(f"{what} has no chunks")
            starts = np.asarray(r.starts, dtype=np.float64)
            if starts.shape != (v.shape[0],):
                raise ValueError(
                    f"{what}: {v.shape[0]} embeddings but starts has shape {starts.shape}"
                )
            check_extra(r.extra, what, max_extra_bytes)
            mats.append(v)
            feats.append(None if r.features is None else self._feature_rows(r, starts, feature_fps))
        dim = mats[0].shape[1]
        if any(m.shape[1] != dim for m in mats):
            raise ValueError("all references in one batch must have the same embedding dimension")
        have_feats = [f for f in feats if f is not None]
        bins = self._feature_bins(have_feats)
        # Refuse a mismatch before writing any file.
        if reference_hop_s is not None:
            self.check_reference_grid(reference_hop_s, reference_speeds or ())
        if have_feats:
            self._check_feature_meta(feature_fps, bins)
        self._bind_model(model_id, dim)
        rows = np.concatenate(mats, axis=0)
        # Unique names, never reused: a crashed attempt's orphan cannot collide.
        stamp = f"{time.time_ns():020d}-{os.getpid()}"
        name = f"seg-{stamp}.f16"
        crc, nbytes = write_segment(self.path / SEGMENT_DIR / name, rows, model_id)
        staged = self._stage_features(have_feats, feature_fps, stamp)
        with transaction(self._conn):
            version, seg_id = self._register_segment(name, rows.shape[0], dim, crc, nbytes)
            fseg_id = 0 if staged is None else self._register_features(staged, version)
            if reference_hop_s is not None:
                self._bind_reference_grid(reference_hop_s, reference_speeds or ())
            row = 0
            frow = 0
            added_at = now()
            for r, m, f in zip(todo, mats, feats, strict=True):
                cur = self._conn.execute(
                    "INSERT INTO refs (id, title, artist, rights_holder, duration, extra, "
                    "content_hash, source_path, added_at, added_version, segment_id, row_start, "
                    "n_chunks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r.id, r.title, r.artist, r.rights_holder, r.duration,
                     json.dumps(r.extra, sort_keys=True, default=str), r.content_hash,
                     r.source_path, added_at, version, seg_id, row, m.shape[0]),
                )
                key = int(cur.lastrowid or 0)
                self._conn.executemany(
                    "INSERT INTO chunks VALUES (?, ?, ?, ?, ?)",
                    [(key, i, float(s), seg_id, row + i)
                     for i, s in enumerate(np.asarray(r.starts, dtype=np.float64))],
                )
                row += m.shape[0]
                if f is not None:
                    self._conn.execute(
                        "INSERT INTO ref_features VALUES (?, ?, ?, ?, ?)",
                        (key, fseg_id, frow, f[0].shape[0], f[1]),
                    )
                    frow += f[0].shape[0]
        return AddResult([r.id for r in todo], skipped, version)

    def remove(self, ref_id: str) -> int:
        """Tombstone a live reference; returns the new version. Unknown id -> KeyError."""
        self._require_writer()
        with transaction(self._conn):
            cur = self._conn.execute(
                "UPDATE refs SET tombstone = 1, removed_at = ?, removed_version = ? "
                "WHERE id = ? AND tombstone = 0",
                (now(), self.version + 1, ref_id),
            )
            if cur.rowcount == 0:
                raise KeyError(f"no live reference with id {ref_id!r} in catalog {self.path}")
            return self._bump()

    def compact(self) -> dict[str, int]:
        """Rewrite live chunks into one segment and drop tombstoned rows and old segments.

        Reference keys stay the same (snapshots refer to them); only rows move. Old
        segment files are unlinked after the commit; readers that mapped them keep
        their mappings.
        """
        self._require_writer()
        layout = self.layout()
        info = self._compact_rows(layout)
        if info["segments_before"]:
            self._compact_features(layout.keys)
        return info

    # ------------------------------------------------------------------ reads

    def _row_to_ref(self, r: tuple[Any, ...]) -> Reference:
        return Reference(
            key=int(r[0]), id=r[1], title=r[2], artist=r[3], rights_holder=r[4],
            duration=r[5], extra=json.loads(r[6] or "{}"), content_hash=r[7], source_path=r[8],
            added_at=r[9], added_version=int(r[10]), tombstone=bool(r[11]), n_chunks=int(r[12]),
        )

    def get(self, ref_id: str) -> Reference:
        row = self._conn.execute(
            f"SELECT {REF_COLUMNS} FROM refs WHERE id = ? AND tombstone = 0", (ref_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no live reference with id {ref_id!r} in catalog {self.path}")
        return self._row_to_ref(row)

    def get_by_keys(self, keys: Iterable[int]) -> dict[int, Reference]:
        ks = [int(k) for k in keys]
        out: dict[int, Reference] = {}
        for i in range(0, len(ks), 500):
            part = ks[i : i + 500]
            q = f"SELECT {REF_COLUMNS} FROM refs WHERE key IN ({','.join('?' * len(part))})"
            for row in self._conn.execute(q, part):
                ref = self._row_to_ref(row)
                out[ref.key] = ref
        return out

    def references(self, *, include_removed: bool = False) -> Iterator[Reference]:
        where = "" if include_removed else "WHERE tombstone = 0"
        yield from (
            self._row_to_ref(r)
            for r in self._conn.execute(f"SELECT {REF_COLUMNS} FROM refs {where} ORDER BY key")
        )

    def tombstoned_keys(self) -> np.ndarray:
        return np.array(
            [r[0] for r in self._conn.execute("SELECT key FROM refs WHERE tombstone = 1")],
            dtype=np.int64,
        )

    def stats(self) -> dict[str, Any]:
        c = self._conn
        live, live_chunks = c.execute(
            "SELECT COUNT(*), COALESCE(SUM(n_chunks), 0) FROM refs WHERE tombstone = 0"
        ).fetchone()
        removed = c.execute("SELECT COUNT(*) FROM refs WHERE tombstone = 1").fetchone()[0]
        nseg, seg_rows, seg_bytes = c.execute(
            "SELECT COUNT(*), COALESCE(SUM(rows), 0), COALESCE(SUM(bytes), 0) FROM segments"
        ).fetchone()
        return {
            "path": str(self.path),
            "model_id": self.model_id,
            "dim": self.dim,
            "version": self.version,
            "references": int(live),
            "removed": int(removed),
            "chunks": int(live_chunks),
            "segments": int(nseg),
            "segment_rows": int(seg_rows),
            "segment_bytes": int(seg_bytes),
            "dead_rows": int(seg_rows) - int(live_chunks),
            "reference_hop_seconds": self.reference_hop_seconds,
            "reference_speeds": list(self.reference_speeds),
            **self._feature_stats(),
        }

    def ref_features(self, ref_id: str) -> np.ndarray:
        """uint8 frames [T, bins] of a live reference by id; KeyError if none are stored."""
        return self.features(verify=False).get(self.get(ref_id).key)

    def verify(self) -> dict[str, int]:
        """Check every segment's length and checksum, and the database's integrity."""
        ok = self._conn.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise CatalogCorruptError(f"catalog database {self.path / DB_NAME}: {ok}")
        self._segments.clear()
        segs = self.segments(verify=True)
        self.layout()
        nfeat = self._verify_features()
        return {"segments": len(segs), "rows": int(sum(m.shape[0] for m in segs.values())),
                "feature_segments": nfeat}


