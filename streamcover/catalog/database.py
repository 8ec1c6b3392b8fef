"""The catalog directory's names, its SQLite schema and the writer's transaction.

Kept apart from :class:`~streamcover.catalog.store.Catalog` so that the parts of the
class that live in sibling modules (``meta.py``, ``rows.py``, ``features.py``) share one
schema and one way of recording a segment file, without importing the class itself.
Both kinds of segment file are recorded alike (a row of name, shape, CRC32 and size), so
:class:`SegmentKind` names what differs and the functions here serve both.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from streamcover.catalog.errors import CatalogCorruptError
from streamcover.files import fsync_dir

SCHEMA_VERSION = 1
DB_NAME = "catalog.sqlite"
SEGMENT_DIR = "segments"
FEATURE_DIR = "features"
SNAPSHOT_DIR = "snapshots"
CURRENT_FILE = "CURRENT"
LOCK_FILE = "LOCK"

Mode = Literal["r", "a", "w"]

REF_COLUMNS = (
    "key, id, title, artist, rights_holder, duration, extra, content_hash, source_path, "
    "added_at, added_version, tombstone, n_chunks"
)

SCHEMA = """
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


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """An IMMEDIATE transaction: committed whole or not at all."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@dataclass(frozen=True)
class SegmentKind:
    """One kind of segment file: what messages call it, its table, the table's two shape
    columns and the catalog subdirectory its files live in."""

    what: str
    table: str
    shape: tuple[str, str]
    directory: str


EMBEDDING_SEGMENTS = SegmentKind("segment", "segments", ("rows", "dim"), SEGMENT_DIR)
FEATURE_SEGMENTS = SegmentKind("feature segment", "feature_segments", ("frames", "bins"),
                               FEATURE_DIR)

_Mapped = TypeVar("_Mapped", bound=np.ndarray)


def record_segment(
    conn: sqlite3.Connection, kind: SegmentKind, name: str, shape: tuple[int, int],
    crc: int, nbytes: int, version: int,
) -> int:
    """Inside a transaction: record a durable segment file; returns its id."""
    a, b = kind.shape
    cur = conn.execute(
        f"INSERT INTO {kind.table} (file, {a}, {b}, crc32, bytes, created_version) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (name, shape[0], shape[1], crc, nbytes, version),
    )
    return int(cur.lastrowid or 0)


def map_recorded(
    conn: sqlite3.Connection, root: Path, kind: SegmentKind, seg_id: int,
    open_file: Callable[[Path], _Mapped], header_crc: Callable[[Path], int] | None,
) -> _Mapped:
    """Map segment ``seg_id`` with ``open_file`` and check it is the file the catalog at
    ``root`` recorded: its shape and, given ``header_crc``, the payload CRC its header holds."""
    a, b = kind.shape
    row = conn.execute(
        f"SELECT file, {a}, {b}, crc32 FROM {kind.table} WHERE id = ?", (seg_id,)
    ).fetchone()
    if row is None:
        raise CatalogCorruptError(f"catalog {root} refers to unknown {kind.what} {seg_id}")
    name, n, width, crc = row
    path = root / kind.directory / name
    mm = open_file(path)
    if mm.shape != (n, width) or (header_crc is not None and header_crc(path) != crc):
        raise CatalogCorruptError(
            f"{kind.what} {path} does not match the catalog's record of it "
            f"({mm.shape} vs {(n, width)})"
        )
    return mm


def recorded_files(conn: sqlite3.Connection, kind: SegmentKind) -> list[tuple[int, str]]:
    """(id, file name) of every recorded segment of ``kind``."""
    return [(int(i), str(f)) for i, f in conn.execute(f"SELECT id, file FROM {kind.table}")]


def remove_unrecorded(conn: sqlite3.Connection, root: Path, kind: SegmentKind) -> None:
    """Delete the files of ``kind`` no committed row names (a crash before the commit)."""
    known = {f for _, f in recorded_files(conn, kind)}
    for p in (root / kind.directory).iterdir():
        if p.name not in known:
            p.unlink()


def unlink_segments(root: Path, kind: SegmentKind, names: Iterable[str]) -> None:
    """After a commit that dropped them: delete segment files (readers keep their maps)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (root / kind.directory / name).unlink()
    fsync_dir(root / kind.directory)
