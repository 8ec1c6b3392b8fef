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

This module is over 450 lines for a reason: :class:`Catalog` is one class that owns one
SQLite schema and the writer's transactions over it; the segment format
(``segments.py``), the records (``records.py``) and the errors (``errors.py``) live apart.
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
from typing import Any, Literal

import numpy as np

from streamcover.catalog.errors import (
    CatalogCorruptError,
    CatalogError,
    CatalogLockedError,
    CatalogNotFoundError,
    ModelMismatchError,
)
from streamcover.catalog.records import (
    MAX_EXTRA_BYTES,
    AddResult,
    FeatureStore,
    Reference,
    ReferenceInput,
    RefLayout,
    check_extra,
    normalise_rows,
)
from streamcover.catalog.segments import (
    FEATURE_FORMAT,
    map_feature_segment,
    map_segment,
    quantize_features,
    read_feature_header,
    stored_crc,
    write_feature_segment,
    write_segment,
)
from streamcover.files import fsync_dir, try_lock

SCHEMA_VERSION = 1
DB_NAME = "catalog.sqlite"
SEGMENT_DIR = "segments"
FEATURE_DIR = "features"
SNAPSHOT_DIR = "snapshots"
CURRENT_FILE = "CURRENT"
LOCK_FILE = "LOCK"

Mode = Literal["r", "a", "w"]


_REF_COLUMNS = (
    "key, id, title, artist, rights_holder, duration, extra, content_hash, source_path, "
    "added_at, added_version, tombstone, n_chunks"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT NOT NULL UNIQUE,
    rows INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    crc32 INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    title TEXT, artist TEXT, rights_holder TEXT, duration REAL,
    extra TEXT NOT NULL DEFAULT '{}',
    content_hash TEXT, source_path TEXT,
    added_at TEXT NOT NULL,
    added_version INTEGER NOT NULL,
    tombstone INTEGER NOT NULL DEFAULT 0,
    removed_at TEXT, removed_version INTEGER,
    segment_id INTEGER REFERENCES segments(id),
    row_start INTEGER NOT NULL,
    n_chunks INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS refs_live_id ON refs(id) WHERE tombstone = 0;
CREATE INDEX IF NOT EXISTS refs_hash ON refs(content_hash);
CREATE TABLE IF NOT EXISTS chunks (
    ref_key INTEGER NOT NULL REFERENCES refs(key),
    ordinal INTEGER NOT NULL,
    start_s REAL NOT NULL,
    segment_id INTEGER NOT NULL,
    row INTEGER NOT NULL,
    PRIMARY KEY (ref_key, ordinal)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feature_segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT NOT NULL UNIQUE,
    frames INTEGER NOT NULL,
    bins INTEGER NOT NULL,
    crc32 INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ref_features (
    ref_key INTEGER PRIMARY KEY REFERENCES refs(key),
    segment_id INTEGER NOT NULL REFERENCES feature_segments(id),
    frame_start INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    scale REAL NOT NULL
);
"""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Catalog:
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
                    conn.executescript(_SCHEMA)
                    with _tx(conn):
                        conn.execute(
                            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                            (str(SCHEMA_VERSION),),
                        )
                        conn.execute("INSERT OR IGNORE INTO meta VALUES ('version', '0')")
                        conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (_now(),))
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

    # ------------------------------------------------------------------ meta

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def version(self) -> int:
        """Monotonic counter, bumped by every committed change."""
        return int(self._meta("version") or 0)

    @property
    def model_id(self) -> str | None:
        return self._meta("model_id")

    @property
    def dim(self) -> int | None:
        d = self._meta("dim")
        return None if d is None else int(d)

    @property
    def reference_hop_seconds(self) -> float | None:
        """The hop the references were chunked at (None: a catalog from before it was
        recorded, built at the then query hop of 10 s)."""
        h = self._meta("reference_hop_seconds")
        return None if h is None else float(h)

    @property
    def reference_speeds(self) -> tuple[float, ...]:
        """The playback speeds the references were also rendered at (``catalog.reference_speeds``);
        empty for a catalog from before speed renders, which has none."""
        s = self._meta("reference_speeds")
        return tuple(float(x) for x in json.loads(s)) if s else ()

    def check_reference_grid(self, hop_s: float, speeds: Sequence[float] = ()) -> None:
        """Refuse to add references chunked at another hop or rendered at other speeds than
        the catalog's: its references would no longer be scored alike."""
        self._check_hop(hop_s)
        if self._count_refs() == 0 and self._meta("reference_speeds") is None:
            return
        have, want = self.reference_speeds, tuple(float(x) for x in speeds)
        if have != want:
            raise CatalogError(
                f"catalog {self.path} holds references rendered at speeds "
                f"{', '.join(f'{x:g}' for x in have) or 'none'}, not "
                f"{', '.join(f'{x:g}' for x in want) or 'none'}; rebuild it with "
                "`streamcover catalog reembed` or use the catalog's catalog.reference_speeds"
            )

    @property
    def feature_fps(self) -> float | None:
        f = self._meta("feature_fps")
        return None if f is None else float(f)

    def _has_feature_tables(self) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ref_features'"
        ).fetchone()
        return row is not None

    def _check_meta(self, key: str, value: float, what: str) -> bool:
        """Whether ``key`` is still unrecorded; a different recorded value is an error."""
        have = self._meta(key)
        if have is not None and abs(float(have) - float(value)) > 1e-9:
            raise CatalogError(
                f"catalog {self.path} holds {what} {float(have):g}, not {float(value):g}; "
                "rebuild it with `streamcover catalog reembed` or use the catalog's setting"
            )
        return have is None

    def _bind_meta(self, key: str, value: float, what: str) -> None:
        """Inside a transaction: record ``key`` on first use, refuse a different value later."""
        if self._check_meta(key, value, what):
            self._conn.execute("INSERT INTO meta VALUES (?, ?)", (key, repr(float(value))))

    def _check_hop(self, hop_s: float) -> None:
        if self._meta("reference_hop_seconds") is None and self._count_refs() > 0:
            raise CatalogError(
                f"catalog {self.path} predates catalog.reference_hop_seconds (its "
                "references sit on the 10 s query grid); rebuild it with "
                "`streamcover catalog reembed` before adding to it"
            )
        self._check_meta("reference_hop_seconds", hop_s, "references at hop (s)")

    def check_model(self, model_id: str, what: str = "query") -> None:
        """Refuse a query or embeddings made by a model other than the catalog's."""
        mine = self.model_id
        if mine is not None and mine != model_id:
            raise ModelMismatchError(
                f"{what} comes from model {model_id!r} but catalog {self.path} was built with "
                f"{mine!r}; re-embed the catalog (`streamcover catalog reembed`) or use that model"
            )

    def _bind_model(self, model_id: str | None, dim: int | None) -> None:
        if model_id is not None:
            self.check_model(model_id, "this writer")
        if dim is not None and self.dim is not None and self.dim != dim:
            raise ModelMismatchError(
                f"catalog {self.path} holds {self.dim}-d embeddings, not {dim}-d"
            )
        if self.mode == "r":
            return
        with _tx(self._conn):
            if model_id is not None and self.model_id is None:
                self._conn.execute("INSERT INTO meta VALUES ('model_id', ?)", (model_id,))
            if dim is not None and self.dim is None:
                self._conn.execute("INSERT INTO meta VALUES ('dim', ?)", (str(dim),))

    def _bump(self) -> int:
        v = self.version + 1
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(v),))
        return v

    # ------------------------------------------------------------------ writes

    def _require_writer(self) -> None:
        if self.mode == "r":
            raise CatalogError(f"catalog {self.path} was opened read-only")

    def _remove_orphans(self) -> None:
        """Delete segment files no committed row points at (a crash before commit) and temp files."""
        known = {r[0] for r in self._conn.execute("SELECT file FROM segments")}
        seg_dir = self.path / SEGMENT_DIR
        for p in seg_dir.iterdir():
            if p.name not in known:
                p.unlink()
        known_feat = {r[0] for r in self._conn.execute("SELECT file FROM feature_segments")}
        for p in (self.path / FEATURE_DIR).iterdir():
            if p.name not in known_feat:
                p.unlink()
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
        bins = have_feats[0][0].shape[1] if have_feats else 0
        if any(f[0].shape[1] != bins for f in have_feats):
            raise ValueError("all references in one batch must have the same number of feature bins")
        # Refuse a mismatch before writing any file.
        if reference_hop_s is not None:
            self.check_reference_grid(reference_hop_s, reference_speeds or ())
        if have_feats:
            assert feature_fps is not None
            self._check_meta("feature_fps", feature_fps, "features at frames/s")
            self._check_meta("feature_bins", bins, "features of bins")
        self._bind_model(model_id, dim)
        rows = np.concatenate(mats, axis=0)
        # Unique names, never reused: a crashed attempt's orphan cannot collide.
        stamp = f"{time.time_ns():020d}-{os.getpid()}"
        name = f"seg-{stamp}.f16"
        crc, nbytes = write_segment(self.path / SEGMENT_DIR / name, rows, model_id)
        fname = f"fseg-{stamp}.u8"
        fmat = np.concatenate([f[0] for f in have_feats]) if have_feats else None
        if fmat is not None:
            assert feature_fps is not None
            fcrc, fbytes = write_feature_segment(self.path / FEATURE_DIR / fname, fmat, feature_fps)
        with _tx(self._conn):
            version, seg_id = self._register_segment(name, rows.shape[0], dim, crc, nbytes)
            fseg_id = 0
            if fmat is not None:
                assert feature_fps is not None
                self._bind_meta("feature_fps", feature_fps, "features at frames/s")
                self._bind_meta("feature_bins", bins, "features of bins")
                cur = self._conn.execute(
                    "INSERT INTO feature_segments (file, frames, bins, crc32, bytes, "
                    "created_version) VALUES (?, ?, ?, ?, ?, ?)",
                    (fname, fmat.shape[0], bins, fcrc, fbytes, version),
                )
                fseg_id = int(cur.lastrowid or 0)
            if reference_hop_s is not None:
                self.check_reference_grid(reference_hop_s, reference_speeds or ())
                self._bind_meta("reference_hop_seconds", reference_hop_s, "references at hop (s)")
                if self._meta("reference_speeds") is None:
                    self._conn.execute("INSERT INTO meta VALUES (?, ?)", (
                        "reference_speeds", json.dumps([float(x) for x in reference_speeds or ()])))
            row = 0
            frow = 0
            now = _now()
            for r, m, f in zip(todo, mats, feats, strict=True):
                cur = self._conn.execute(
                    "INSERT INTO refs (id, title, artist, rights_holder, duration, extra, "
                    "content_hash, source_path, added_at, added_version, segment_id, row_start, "
                    "n_chunks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r.id, r.title, r.artist, r.rights_holder, r.duration,
                     json.dumps(r.extra, sort_keys=True, default=str), r.content_hash,
                     r.source_path, now, version, seg_id, row, m.shape[0]),
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

    def _count_refs(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM refs").fetchone()[0])

    def _register_segment(
        self, name: str, n_rows: int, dim: int, crc: int, nbytes: int
    ) -> tuple[int, int]:
        """Inside a transaction: bump the version and record a durable segment file.
        Returns (new version, segment id)."""
        version = self._bump()
        cur = self._conn.execute(
            "INSERT INTO segments (file, rows, dim, crc32, bytes, created_version) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (name, n_rows, dim, crc, nbytes, version),
        )
        return version, int(cur.lastrowid or 0)

    def remove(self, ref_id: str) -> int:
        """Tombstone a live reference; returns the new version. Unknown id -> KeyError."""
        self._require_writer()
        with _tx(self._conn):
            cur = self._conn.execute(
                "UPDATE refs SET tombstone = 1, removed_at = ?, removed_version = ? "
                "WHERE id = ? AND tombstone = 0",
                (_now(), self.version + 1, ref_id),
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
        model_id = self.model_id
        layout = self.layout()
        old = [(int(i), str(f)) for i, f in self._conn.execute("SELECT id, file FROM segments")]
        if not old:
            return {"segments_before": 0, "segments_after": 0, "chunks": 0}
        keys = layout.keys
        parts = [self.ref_vectors(int(k), layout) for k in keys]
        dim = self.dim or 0
        rows = np.concatenate(parts, axis=0) if parts else np.zeros((0, dim), np.float16)
        name = f"seg-{time.time_ns():020d}-{os.getpid()}.f16"
        crc, nbytes = write_segment(self.path / SEGMENT_DIR / name, rows, model_id or "")
        with _tx(self._conn):
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
        for _, f in old:
            with contextlib.suppress(FileNotFoundError):
                (self.path / SEGMENT_DIR / f).unlink()
        fsync_dir(self.path / SEGMENT_DIR)
        self._compact_features(keys)
        return {"segments_before": len(old), "segments_after": 1, "chunks": int(rows.shape[0])}

    def _compact_features(self, keys: np.ndarray) -> None:
        """Rewrite the live references' stored features into one feature segment (same
        order of writes as the embeddings: file durable first, then one transaction)."""
        old = [(int(i), str(f)) for i, f in
               self._conn.execute("SELECT id, file FROM feature_segments")]
        if not old:
            return
        store = self.features()
        live = [int(k) for k in keys if store.has(int(k))]
        bins = int(store.bins or 0)
        parts = [store.get(k) for k in live]
        frames = np.concatenate(parts) if parts else np.zeros((0, bins), np.uint8)
        name = f"fseg-{time.time_ns():020d}-{os.getpid()}.u8"
        crc, nbytes = write_feature_segment(self.path / FEATURE_DIR / name, frames,
                                            float(store.fps or 0.0))
        with _tx(self._conn):
            cur = self._conn.execute(
                "INSERT INTO feature_segments (file, frames, bins, crc32, bytes, created_version) "
                "VALUES (?, ?, ?, ?, ?, ?)", (name, frames.shape[0], bins, crc, nbytes, self.version),
            )
            fseg_id = int(cur.lastrowid or 0)
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
        for _, f in old:
            with contextlib.suppress(FileNotFoundError):
                (self.path / FEATURE_DIR / f).unlink()
        fsync_dir(self.path / FEATURE_DIR)

    # ------------------------------------------------------------------ reads

    def _row_to_ref(self, r: tuple[Any, ...]) -> Reference:
        return Reference(
            key=int(r[0]), id=r[1], title=r[2], artist=r[3], rights_holder=r[4],
            duration=r[5], extra=json.loads(r[6] or "{}"), content_hash=r[7], source_path=r[8],
            added_at=r[9], added_version=int(r[10]), tombstone=bool(r[11]), n_chunks=int(r[12]),
        )

    def get(self, ref_id: str) -> Reference:
        row = self._conn.execute(
            f"SELECT {_REF_COLUMNS} FROM refs WHERE id = ? AND tombstone = 0", (ref_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no live reference with id {ref_id!r} in catalog {self.path}")
        return self._row_to_ref(row)

    def get_by_keys(self, keys: Iterable[int]) -> dict[int, Reference]:
        ks = [int(k) for k in keys]
        out: dict[int, Reference] = {}
        for i in range(0, len(ks), 500):
            part = ks[i : i + 500]
            q = f"SELECT {_REF_COLUMNS} FROM refs WHERE key IN ({','.join('?' * len(part))})"
            for row in self._conn.execute(q, part):
                ref = self._row_to_ref(row)
                out[ref.key] = ref
        return out

    def references(self, *, include_removed: bool = False) -> Iterator[Reference]:
        where = "" if include_removed else "WHERE tombstone = 0"
        yield from (
            self._row_to_ref(r)
            for r in self._conn.execute(f"SELECT {_REF_COLUMNS} FROM refs {where} ORDER BY key")
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

    def segment(self, seg_id: int, *, verify: bool = True) -> np.memmap:
        """The memory-mapped rows of a segment (checked once per process)."""
        mm = self._segments.get(seg_id)
        if mm is None:
            row = self._conn.execute(
                "SELECT file, rows, dim, crc32 FROM segments WHERE id = ?", (seg_id,)
            ).fetchone()
            if row is None:
                raise CatalogCorruptError(f"catalog {self.path} refers to unknown segment {seg_id}")
            f, rows, dim, crc = row
            path = self.path / SEGMENT_DIR / f
            mm = map_segment(path, verify=verify, model_id=self.model_id)
            if mm.shape != (rows, dim) or (verify and stored_crc(path) != crc):
                raise CatalogCorruptError(
                    f"segment {path} does not match the catalog's record of it "
                    f"({mm.shape} vs {(rows, dim)})"
                )
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

    def feature_segment(self, seg_id: int, *, verify: bool = True) -> np.ndarray:
        """The memory-mapped frames [T, bins] of a feature segment (checked once per process)."""
        mm = self._feature_maps.get(seg_id)
        if mm is None:
            row = self._conn.execute(
                "SELECT file, frames, bins, crc32 FROM feature_segments WHERE id = ?", (seg_id,)
            ).fetchone()
            if row is None:
                raise CatalogCorruptError(
                    f"catalog {self.path} refers to unknown feature segment {seg_id}")
            f, frames, bins, crc = row
            path = self.path / FEATURE_DIR / f
            mm = map_feature_segment(path, verify=verify)
            if mm.shape != (frames, bins) or read_feature_header(path)[2] != crc:
                raise CatalogCorruptError(
                    f"feature segment {path} does not match the catalog's record of it "
                    f"({mm.shape} vs {(frames, bins)})"
                )
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

    def ref_features(self, ref_id: str) -> np.ndarray:
        """uint8 frames [T, bins] of a live reference by id; KeyError if none are stored."""
        return self.features(verify=False).get(self.get(ref_id).key)

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

    def verify(self) -> dict[str, int]:
        """Check every segment's length and checksum, and the database's integrity."""
        ok = self._conn.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise CatalogCorruptError(f"catalog database {self.path / DB_NAME}: {ok}")
        self._segments.clear()
        segs = self.segments(verify=True)
        self.layout()
        self._feature_maps.clear()
        nfeat = 0
        if self._has_feature_tables():
            ids = [int(r[0]) for r in self._conn.execute("SELECT id FROM feature_segments")]
            for i in ids:
                self.feature_segment(i, verify=True)
            nfeat = len(ids)
            self.features(verify=False)
        return {"segments": len(segs), "rows": int(sum(m.shape[0] for m in segs.values())),
                "feature_segments": nfeat}


@contextlib.contextmanager
def _tx(conn: sqlite3.Connection) -> Iterator[None]:
    """An IMMEDIATE transaction: committed whole or not at all."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
