"""The reference catalog on disk: SQLite (WAL) metadata plus float16 embedding segments.

Layout of a catalog directory::

    catalog.sqlite (+ -wal, -shm)   references, chunks, segments, meta (model id, dim, version)
    segments/seg-000001.f16         immutable, checksummed float16 rows, memory-mapped for reads
    snapshots/<name>/               immutable index snapshots (see ``index.py``)
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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import struct
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

SCHEMA_VERSION = 1
DB_NAME = "catalog.sqlite"
SEGMENT_DIR = "segments"
SNAPSHOT_DIR = "snapshots"
CURRENT_FILE = "CURRENT"
LOCK_FILE = "LOCK"

SEGMENT_MAGIC = b"SCSEG001"
# magic, header version, dim, rows, payload crc32, model-id digest (16 bytes), header crc32
_SEG_HEADER = struct.Struct("<8sIIQI16sI")
SEGMENT_HEADER_BYTES = 64
assert _SEG_HEADER.size <= SEGMENT_HEADER_BYTES

# Rows are L2-normalised before storage; anything this far from unit norm is rejected
# (NaN, inf, all-zero), because it would poison the inner-product index silently.
_MIN_NORM = 1e-6

Mode = Literal["r", "a", "w"]


class CatalogError(Exception):
    """Base class for catalog errors; the message names the catalog or file."""


class CatalogNotFoundError(CatalogError):
    """Opening a catalog that does not exist in read mode."""


class CatalogCorruptError(CatalogError):
    """A segment, snapshot or database failed its length or checksum check."""


class ModelMismatchError(CatalogError):
    """Embeddings or queries from a model other than the catalog's."""


class CatalogLockedError(CatalogError):
    """Another process holds the catalog's writer lock."""


def model_digest(model_id: str) -> bytes:
    """16-byte digest of a model id, stamped into every segment header."""
    import hashlib

    return hashlib.sha256(model_id.encode("utf-8")).digest()[:16]


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write-then-rename with fsync of the file and of its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


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


# ----------------------------------------------------------------------------- segments


def write_segment(path: Path, rows: np.ndarray, model_id: str) -> tuple[int, int]:
    """Write float16 ``rows`` [N, D] durably to ``path``; return (crc32, bytes)."""
    data = np.ascontiguousarray(rows, dtype="<f2")
    n, dim = data.shape
    payload = data.tobytes()
    crc = zlib.crc32(payload)
    head = _SEG_HEADER.pack(SEGMENT_MAGIC, 1, dim, n, crc, model_digest(model_id), 0)
    head_crc = zlib.crc32(head[:-4])
    head = head[:-4] + struct.pack("<I", head_crc)
    head = head.ljust(SEGMENT_HEADER_BYTES, b"\0")
    atomic_write_bytes(path, head + payload)
    return crc, len(head) + len(payload)


def read_segment_header(path: Path) -> tuple[int, int, int, bytes]:
    """Return (dim, rows, crc32, model digest) after checking magic, header CRC and length."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(SEGMENT_HEADER_BYTES)
    except FileNotFoundError:
        raise CatalogCorruptError(f"segment {path} is missing") from None
    if len(head) < SEGMENT_HEADER_BYTES:
        raise CatalogCorruptError(f"segment {path} is truncated (header is {len(head)} bytes)")
    magic, _ver, dim, rows, crc, digest, head_crc = _SEG_HEADER.unpack(head[: _SEG_HEADER.size])
    if magic != SEGMENT_MAGIC:
        raise CatalogCorruptError(f"segment {path} has a bad magic number {magic!r}")
    if zlib.crc32(head[: _SEG_HEADER.size - 4]) != head_crc:
        raise CatalogCorruptError(f"segment {path} has a corrupt header (CRC mismatch)")
    expected = SEGMENT_HEADER_BYTES + rows * dim * 2
    if size != expected:
        raise CatalogCorruptError(
            f"segment {path} is {size} bytes, expected {expected} ({rows} rows x {dim} dims): "
            "truncated or partially written"
        )
    return dim, rows, crc, digest


def map_segment(path: Path, *, verify: bool = True, model_id: str | None = None) -> np.memmap:
    """Memory-map a segment as float16 [rows, dim], checking length, header and (optionally) CRC."""
    dim, rows, crc, digest = read_segment_header(path)
    if model_id is not None and digest != model_digest(model_id):
        raise ModelMismatchError(f"segment {path} was written by another model than {model_id!r}")
    mm = np.memmap(path, dtype="<f2", mode="r", offset=SEGMENT_HEADER_BYTES, shape=(rows, dim))
    if verify:
        got = 0
        step = 1 << 13
        for i in range(0, rows, step):
            got = zlib.crc32(np.ascontiguousarray(mm[i : i + step]).tobytes(), got)
        if got != crc:
            raise CatalogCorruptError(f"segment {path} failed its checksum (file is corrupt)")
    return mm


# ----------------------------------------------------------------------------- records


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
            lock_fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                raise CatalogLockedError(
                    f"catalog {root} is being written by another process (LOCK is held)"
                ) from None
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
        snap_dir = self.path / SNAPSHOT_DIR
        for p in snap_dir.glob(".tmp-*"):
            import shutil

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

    def add_references(self, refs: Sequence[ReferenceInput], model_id: str) -> AddResult:
        """Add a batch durably: one new segment, then one SQLite transaction.

        Ids already live are skipped (idempotent resume). Model id and dimension are
        checked against the catalog's; the first add binds them.
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
        for r in todo:
            v = normalise_rows(r.vectors, f"reference {r.id!r}")
            if v.shape[0] == 0:
                raise ValueError(f"reference {r.id!r} has no chunks")
            starts = np.asarray(r.starts, dtype=np.float64)
            if starts.shape != (v.shape[0],):
                raise ValueError(
                    f"reference {r.id!r}: {v.shape[0]} embeddings but starts has shape {starts.shape}"
                )
            mats.append(v)
        dim = mats[0].shape[1]
        if any(m.shape[1] != dim for m in mats):
            raise ValueError("all references in one batch must have the same embedding dimension")
        self._bind_model(model_id, dim)
        rows = np.concatenate(mats, axis=0)
        # Unique name, never reused: a crashed attempt's orphan cannot collide.
        name = f"seg-{time.time_ns():020d}-{os.getpid()}.f16"
        crc, nbytes = write_segment(self.path / SEGMENT_DIR / name, rows, model_id)
        with _tx(self._conn):
            version, seg_id = self._register_segment(name, rows.shape[0], dim, crc, nbytes)
            row = 0
            now = _now()
            for r, m in zip(todo, mats, strict=True):
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
        return AddResult([r.id for r in todo], skipped, version)

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
        return {"segments_before": len(old), "segments_after": 1, "chunks": int(rows.shape[0])}

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
        }

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
            if mm.shape != (rows, dim) or (verify and _stored_crc(path) != crc):
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
        return {"segments": len(segs), "rows": int(sum(m.shape[0] for m in segs.values()))}


def _stored_crc(path: Path) -> int:
    return read_segment_header(path)[2]


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
