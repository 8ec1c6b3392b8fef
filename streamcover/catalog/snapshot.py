"""Index snapshots on disk, the ``CURRENT`` pointer, and building them.

A snapshot is an immutable directory ``snapshots/<name>/`` holding the faiss index,
the mapping faiss position -> (reference key, chunk ordinal), the reference centroids
and a manifest naming the store version it was built from, the index parameters and
each file's size and CRC32. It is written under ``snapshots/.tmp-*``, fsynced and
renamed, then the ``CURRENT`` pointer is replaced atomically, so a reader sees the old
snapshot or the new one, never a partial one. Builds extend the previous graph when
they can (HNSW cannot delete; removals stay query-time tombstones until a full rebuild).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamcover.catalog.centroids import (
    CentroidIndex,
    make_centroid_index,
    reference_centroids,
)
from streamcover.catalog.errors import CatalogCorruptError, CatalogError
from streamcover.catalog.factory import IndexParams, hnsw_of, make_index
from streamcover.catalog.records import RefLayout, live_mask
from streamcover.catalog.screen import ProjectedRows, projection_of
from streamcover.catalog.store import CURRENT_FILE, SNAPSHOT_DIR, Catalog
from streamcover.files import atomic_write_bytes, file_crc32, file_lock, fsync_dir, fsync_file
from streamcover.log import get_logger

SNAPSHOT_FORMAT = 1
_BUILD_LOCK = ".build.lock"
# Fraction of dead (tombstoned) vectors above which a rebuild starts over instead of
# appending to the previous snapshot's graph.
REBUILD_DEAD_FRACTION = 0.2
# A projection or quantiser fitted on fewer than 1/REFIT_GROWTH of the rows it could be
# fitted on now (the live chunks, up to TRAIN_ROWS) is refitted by a full rebuild: a
# catalog that starts small would otherwise keep its first, poorly fitted projection.
REFIT_GROWTH = 4
TRAIN_ROWS = 100_000
PQ_TRAIN_ROWS = 32_768  # PQ k-means cost grows with the sample; ~128 points per centroid
log = get_logger(__name__)



@dataclass(frozen=True)
class SnapshotManifest:
    name: str
    store_version: int
    model_id: str | None
    dim: int
    params: dict[str, Any]
    n_vectors: int
    built_at: str
    build_seconds: float
    incremental_from: str | None
    files: dict[str, dict[str, int]]
    # Rows the projection / quantiser ranges were fitted on (None: exact index, or a
    # snapshot from before this was recorded). Incremental builds carry it over.
    trained_rows: int | None = None


@dataclass
class Snapshot:
    """A loaded snapshot: the faiss index plus position -> (ref key, ordinal)."""

    path: Path
    manifest: SnapshotManifest
    index: Any  # faiss.IndexHNSW*
    ref_keys: np.ndarray  # [n] int64
    ordinals: np.ndarray  # [n] int32
    # One vector per reference (streamcover.catalog.centroids); None in snapshots built
    # before centroids existed.
    centroids: CentroidIndex | None = None
    # Stage-2 screening rows (projected HNSW-flat or HNSW-SQ snapshots), built when the snapshot
    # loads, off the query path; shared by every view of the snapshot.
    projected: ProjectedRows | None = None

    @classmethod
    def load(cls, path: Path, *, verify: bool = True, ef_search: int | None = None) -> Snapshot:
        """Load and check a snapshot directory; corrupt or partial -> CatalogCorruptError."""
        import faiss

        mpath = path / "manifest.json"
        try:
            raw = json.loads(mpath.read_text())
            manifest = SnapshotManifest(**raw)
        except FileNotFoundError:
            raise CatalogCorruptError(f"snapshot {path} has no manifest.json") from None
        except (ValueError, TypeError) as exc:
            raise CatalogCorruptError(f"snapshot manifest {mpath} is unreadable: {exc}") from exc
        for fname, info in manifest.files.items():
            fp = path / fname
            if not fp.exists():
                raise CatalogCorruptError(f"snapshot file {fp} is missing")
            size = fp.stat().st_size
            if size != info["bytes"]:
                raise CatalogCorruptError(
                    f"snapshot file {fp} is {size} bytes, manifest says {info['bytes']}"
                )
            if verify and file_crc32(fp) != info["crc32"]:
                raise CatalogCorruptError(f"snapshot file {fp} failed its checksum")
        index: Any
        try:
            index = faiss.read_index(str(path / "index.faiss"))
        except RuntimeError as exc:
            raise CatalogCorruptError(f"snapshot index {path / 'index.faiss'}: {exc}") from exc
        ref_keys = np.load(path / "ref_keys.npy")
        ordinals = np.load(path / "ordinals.npy")
        if not (index.ntotal == ref_keys.shape[0] == ordinals.shape[0] == manifest.n_vectors):
            raise CatalogCorruptError(
                f"snapshot {path}: index has {index.ntotal} vectors, id map {ref_keys.shape[0]}, "
                f"manifest {manifest.n_vectors}"
            )
        if ef_search is not None:
            hnsw_of(index).efSearch = ef_search
        centroids = None
        if CENTROID_FILES[0] in manifest.files:
            try:
                cindex = faiss.read_index(str(path / CENTROID_FILES[0]))
            except RuntimeError as exc:
                raise CatalogCorruptError(f"snapshot centroids {path / CENTROID_FILES[0]}: {exc}") from exc
            ckeys = np.load(path / CENTROID_FILES[1])
            if cindex.ntotal != ckeys.shape[0]:
                raise CatalogCorruptError(
                    f"snapshot {path}: centroid index has {cindex.ntotal} vectors, "
                    f"its key map {ckeys.shape[0]}"
                )
            centroids = CentroidIndex(cindex, ckeys)
        return cls(path, manifest, index, ref_keys, ordinals, centroids,
                   ProjectedRows.of(index, ref_keys, ordinals))


CENTROID_FILES = ("centroids.faiss", "centroid_keys.npy")



def snapshot_root(catalog_path: Path) -> Path:
    return catalog_path / SNAPSHOT_DIR


def current_snapshot_name(catalog_path: Path) -> str | None:
    """The snapshot ``CURRENT`` points at, or None before the first build."""
    try:
        name = (catalog_path / CURRENT_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


def current_snapshot_path(catalog_path: Path) -> Path | None:
    name = current_snapshot_name(catalog_path)
    if name is None:
        return None
    p = snapshot_root(catalog_path) / name
    if not p.is_dir():
        raise CatalogCorruptError(f"{catalog_path / CURRENT_FILE} names missing snapshot {name}")
    return p



def build_snapshot(
    catalog: Catalog,
    params: IndexParams,
    *,
    incremental: bool = True,
    keep: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Build an index snapshot of the catalog's live chunks and make it CURRENT.

    With ``incremental`` and a compatible previous snapshot holding few dead
    vectors, the previous graph is loaded and only chunks added since are inserted
    (HNSW cannot delete, so removals stay as query-time tombstones until a full
    rebuild). Returns the snapshot directory.
    """
    import faiss

    cpath = catalog.path
    with file_lock(snapshot_root(cpath) / _BUILD_LOCK):
        t0 = time.perf_counter()
        with catalog.reading():
            version = catalog.version
            layout = catalog.layout()
            dim = catalog.dim
        if dim is None:
            raise CatalogError(f"catalog {cpath} is empty: nothing to index")
        live_total = int(layout.n_chunks.sum())
        prev: Snapshot | None = None
        prev_path = current_snapshot_path(cpath)
        if incremental and prev_path is not None:
            try:
                cand = Snapshot.load(prev_path, verify=True)
            except CatalogCorruptError as exc:
                log.warning("snapshot.previous_unusable", path=str(prev_path), error=str(exc))
                cand = None
            if cand is not None and _can_extend(cand, params, catalog, layout):
                prev = cand
        trained_rows = prev.manifest.trained_rows if prev is not None else None
        cindex: Any = None
        ckey_parts: list[np.ndarray] = []
        if prev is not None:
            index = prev.index
            keys_parts = [prev.ref_keys]
            ord_parts = [prev.ordinals]
            new_keys = layout.keys[layout.added_version[layout.keys] > prev.manifest.store_version]
            if prev.centroids is not None:
                cindex, ckey_parts = prev.centroids.index, [prev.centroids.keys]
        else:
            index = None
            keys_parts, ord_parts = [], []
            new_keys = layout.keys
        n_new = int(layout.n_chunks[new_keys].sum())
        if index is None:
            n_train = _train_rows(params, live_total)
            sample = _sample_rows(catalog, layout, n_train) if params.approximate(dim) else None
            index = make_index(dim, params, n_train, sample)
            if not index.is_trained:
                index.train(sample)
            trained_rows = int(sample.shape[0]) if sample is not None else None
        hnsw_of(index).efConstruction = params.ef_construction
        if cindex is None:
            cindex = make_centroid_index(dim, params.m, params.ef_construction, projection_of(index))
            if prev is not None:
                # A snapshot from before centroids: give its references theirs once.
                old = np.setdiff1d(layout.keys, new_keys)
                for vecs, keys, _ in catalog.iter_live_vectors(layout, old, batch_rows=16384):
                    ck, cv = reference_centroids(vecs, keys)
                    cindex.add(cv)
                    ckey_parts.append(ck)
        done = 0
        for vecs, keys, ords in catalog.iter_live_vectors(layout, new_keys, batch_rows=16384):
            index.add(vecs)
            keys_parts.append(keys)
            ord_parts.append(ords)
            ck, cv = reference_centroids(vecs, keys)
            cindex.add(cv)
            ckey_parts.append(ck)
            done += vecs.shape[0]
            if progress is not None:
                progress(done, n_new)
        centroid_keys = np.concatenate(ckey_parts) if ckey_parts else np.zeros(0, np.int64)
        ref_keys = np.concatenate(keys_parts) if keys_parts else np.zeros(0, np.int64)
        ordinals = np.concatenate(ord_parts) if ord_parts else np.zeros(0, np.int32)
        hnsw_of(index).efSearch = params.ef_search

        name = f"v{version:010d}-{time.time_ns()}"
        root = snapshot_root(cpath)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            faiss.write_index(index, str(tmp / "index.faiss"))
            np.save(tmp / "ref_keys.npy", ref_keys.astype(np.int64))
            np.save(tmp / "ordinals.npy", ordinals.astype(np.int32))
            faiss.write_index(cindex, str(tmp / CENTROID_FILES[0]))
            np.save(tmp / CENTROID_FILES[1], centroid_keys.astype(np.int64))
            files = {}
            for f in ("index.faiss", "ref_keys.npy", "ordinals.npy", *CENTROID_FILES):
                fp = tmp / f
                fsync_file(fp)
                files[f] = {"bytes": fp.stat().st_size, "crc32": file_crc32(fp)}
            manifest = SnapshotManifest(
                name=name, store_version=version, model_id=catalog.model_id, dim=dim,
                params=asdict(params), n_vectors=int(index.ntotal),
                built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                build_seconds=round(time.perf_counter() - t0, 3),
                incremental_from=None if prev is None else prev.manifest.name, files=files,
                trained_rows=trained_rows,
            )
            atomic_write_bytes(tmp / "manifest.json", json.dumps(asdict(manifest), indent=1).encode())
            fsync_dir(tmp)
            final = root / name
            os.rename(tmp, final)
            fsync_dir(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_bytes(cpath / CURRENT_FILE, (name + "\n").encode())
        _prune(root, keep=keep, current=name)
        log.info("snapshot.built", name=name, vectors=int(index.ntotal), added=n_new,
                 incremental=prev is not None, seconds=manifest.build_seconds)
        return final


def _can_extend(prev: Snapshot, params: IndexParams, catalog: Catalog, layout: RefLayout) -> bool:
    m = prev.manifest
    if m.model_id != catalog.model_id or m.dim != catalog.dim:
        return False
    if IndexParams(**m.params).build_key() != params.build_key():
        return False
    if m.store_version > catalog.version:
        return False
    n = layout.n_chunks
    alive = live_mask(prev.ref_keys, n)
    dead = 1.0 - float(alive.mean()) if alive.size else 0.0
    if dead > REBUILD_DEAD_FRACTION:
        return False
    fitted = m.trained_rows
    could = _train_rows(params, int(n.sum()))
    if params.approximate(m.dim) and fitted is not None and fitted * REFIT_GROWTH < could:
        log.info("snapshot.refit", snapshot=m.name, fitted_rows=fitted, live_rows=could)
        return False
    return True


def _train_rows(params: IndexParams, live_total: int) -> int:
    """Rows to fit a projection / quantiser on: every live chunk, up to a cap."""
    return min(live_total, PQ_TRAIN_ROWS if params.kind == "hnsw_pq" else TRAIN_ROWS)


def _sample_rows(catalog: Catalog, layout: RefLayout, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    keys = layout.keys
    if keys.size == 0:
        raise CatalogError(f"catalog {catalog.path} has no live chunks to train on")
    chosen = rng.permutation(keys)
    parts, have = [], 0
    for k in chosen:
        v = catalog.ref_vectors(int(k), layout)
        parts.append(v)
        have += v.shape[0]
        if have >= n:
            break
    return np.ascontiguousarray(np.concatenate(parts)[:n], dtype=np.float32)


def _prune(root: Path, *, keep: int, current: str) -> None:
    snaps = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    old = [p for p in snaps if p.name != current][: max(0, len(snaps) - keep)]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)


class BackgroundBuilder:
    """Runs :func:`build_snapshot` (optionally after ``compact``) in a daemon thread."""

    def __init__(self, catalog_path: Path, params: IndexParams, *, compact: bool = False) -> None:
        self.catalog_path = Path(catalog_path)
        self.params = params
        self.compact = compact
        self.result: Path | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="catalog-rebuild", daemon=True)

    def start(self) -> BackgroundBuilder:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> Path | None:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            with Catalog.open(self.catalog_path, "a" if self.compact else "r") as cat:
                if self.compact:
                    cat.compact()
                self.result = build_snapshot(cat, self.params, incremental=not self.compact)
        except BaseException as exc:
            self.error = exc
            log.error("snapshot.background_failed", error=str(exc))
