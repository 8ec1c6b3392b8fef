"""faiss HNSW snapshots of the catalog, and the read-only view a monitor searches.

A snapshot is an immutable directory ``snapshots/<name>/`` holding the faiss index,
the mapping faiss position -> (reference key, chunk ordinal), and a manifest naming
the store version it was built from, the index parameters and each file's size and
CRC32. It is written under ``snapshots/.tmp-*``, fsynced and renamed, then the
``CURRENT`` pointer is replaced atomically. A running monitor holds a
:class:`SnapshotWatcher`, which polls ``CURRENT`` and the catalog version and swaps
in a new :class:`SearchView` (one Python reference assignment) without a restart.

Between snapshots the view stays current by itself: references removed since the
snapshot are filtered at query time (a faiss ``IDSelectorBitmap`` over live
positions, so the top-K are all live), and references added since are searched
exactly in a small in-memory delta index until the next rebuild folds them in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamcover.catalog.centroids import (
    CentroidIndex,
    make_centroid_index,
    query_centroid,
    reference_centroids,
)
from streamcover.catalog.screen import ProjectedRows, behind_projection, projection_of
from streamcover.catalog.store import (
    CURRENT_FILE,
    SNAPSHOT_DIR,
    Catalog,
    CatalogCorruptError,
    CatalogError,
    FeatureStore,
    RefLayout,
    atomic_write_bytes,
    fsync_dir,
    live_mask,
)
from streamcover.config import CatalogSettings, IndexKind
from streamcover.log import get_logger

# settings.catalog's defaults, which the library's own defaults take.
CATALOG_DEFAULTS = CatalogSettings()
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
log = get_logger("streamcover.catalog.index")


@dataclass(frozen=True)
class IndexParams:
    """Which faiss index and its HNSW/PQ knobs (see ``settings.catalog``)."""

    # The defaults are settings.catalog's.
    kind: IndexKind = CATALOG_DEFAULTS.index
    m: int = CATALOG_DEFAULTS.hnsw_m
    ef_construction: int = CATALOG_DEFAULTS.hnsw_ef_construction
    ef_search: int = CATALOG_DEFAULTS.hnsw_ef_search
    pq_m: int = CATALOG_DEFAULTS.pq_m
    # > 0: the graph is built over a projection of the embeddings onto their top pca_dim
    # principal directions; at or above the embedding dimension, no projection.
    pca_dim: int = CATALOG_DEFAULTS.pca_dim

    @classmethod
    def from_settings(cls, s: CatalogSettings) -> IndexParams:
        return cls(s.index, s.hnsw_m, s.hnsw_ef_construction, s.hnsw_ef_search, s.pq_m,
                   s.pca_dim)

    def build_key(self) -> tuple[Any, ...]:
        """Parameters that shape the graph (efSearch does not)."""
        return (self.kind, self.m, self.ef_construction, self.pq_m, self.pca_dim)

    def approximate(self, dim: int) -> bool:
        """Whether the index's own similarities of ``dim``-d embeddings are approximate
        (compressed, or projected to fewer dimensions)."""
        return self.kind != "hnsw" or 0 < self.pca_dim < dim


def hnsw_of(index: Any) -> Any:
    """The HNSW graph structure of a (possibly projected) HNSW index."""
    import faiss

    inner: Any = (faiss.downcast_index(index.index)
                  if isinstance(index, faiss.IndexPreTransform) else index)
    return inner.hnsw


def projection(sample: np.ndarray, out_dim: int) -> np.ndarray:
    """``[out_dim, D]`` rows spanning the top principal directions of the *uncentred*
    second moment of ``sample``: inner products of projected vectors are then the best
    rank-``out_dim`` approximation of the original inner products (centring would drop
    each vector's component along the mean, which the ranking by inner product uses)."""
    x = np.asarray(sample, dtype=np.float64)
    if not 0 < out_dim < x.shape[1]:
        raise CatalogError(f"catalog.pca_dim={out_dim} must be between 1 and the dimension "
                           f"{x.shape[1]} (0 turns the projection off)")
    vals, vecs = np.linalg.eigh(x.T @ x / max(len(x), 1))
    return np.ascontiguousarray(vecs[:, np.argsort(-vals)[:out_dim]].T, dtype=np.float32)


def make_index(dim: int, params: IndexParams, n_train: int = 0,
               sample: np.ndarray | None = None) -> Any:
    """An empty inner-product HNSW index of the requested kind.

    With ``params.pca_dim``, the HNSW index works on ``sample``'s top principal directions
    behind a fixed linear transform (so ``sample`` is required).
    """
    import faiss

    fa: Any = faiss  # faiss's stubs miss the SWIG overloads used below
    ip = faiss.METRIC_INNER_PRODUCT
    projected = 0 < params.pca_dim < dim
    if projected:
        if sample is None:
            raise CatalogError("a projected index (catalog.pca_dim) needs training rows")
        proj = projection(sample, params.pca_dim)
        dim = params.pca_dim
    idx: Any
    if params.kind == "hnsw":
        idx = faiss.IndexHNSWFlat(dim, params.m, ip)
    elif params.kind == "hnsw_sq8":
        idx = fa.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, params.m, ip)
    elif params.kind == "hnsw_sq4":
        idx = fa.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_4bit, params.m, ip)
    elif params.kind == "hnsw_pq":
        if dim % params.pq_m:
            raise CatalogError(f"catalog.pq_m={params.pq_m} must divide the dimension {dim}")
        # 8-bit codes need ~40 training points per centroid; small catalogs get fewer bits.
        nbits = 8
        while nbits > 4 and n_train < 39 * (1 << nbits):
            nbits -= 1
        idx = fa.IndexHNSWPQ(dim, params.pq_m, params.m, nbits, ip)
    else:  # pragma: no cover - Literal guards this
        raise CatalogError(f"unknown index kind {params.kind!r}")
    idx.hnsw.efConstruction = params.ef_construction
    idx.hnsw.efSearch = params.ef_search
    if projected:
        return behind_projection(idx, proj)
    return idx


def index_bytes_per_vector(index: Any) -> float:
    """Serialized size of ``index`` divided by its vector count."""
    import faiss

    if index.ntotal == 0:
        return 0.0
    return len(faiss.serialize_index(index)) / index.ntotal


# ----------------------------------------------------------------------------- snapshots


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
            if verify and _file_crc(fp) != info["crc32"]:
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


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            crc = zlib.crc32(block, crc)
    return crc


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


@contextlib.contextmanager
def _build_lock(catalog_path: Path) -> Any:
    root = snapshot_root(catalog_path)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / _BUILD_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
    with _build_lock(cpath):
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
                _fsync_file(fp)
                files[f] = {"bytes": fp.stat().st_size, "crc32": _file_crc(fp)}
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


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


# ----------------------------------------------------------------------------- search view


@dataclass
class Stage1Result:
    """Neighbours of each query chunk: similarity, reference key and chunk ordinal [M, k]."""

    sims: np.ndarray
    ref_keys: np.ndarray
    ordinals: np.ndarray


class SearchView:
    """An immutable, self-consistent picture of the catalog that queries run against."""

    def __init__(
        self,
        catalog_path: Path,
        *,
        model_id: str | None,
        dim: int,
        store_version: int,
        layout: RefLayout,
        segments: dict[int, np.ndarray],
        snapshot: Snapshot | None,
        features: FeatureStore | None = None,
        reference_hop_s: float | None = None,
    ) -> None:
        import faiss

        self.catalog_path = catalog_path
        self.features = features if features is not None else FeatureStore.empty()
        self.reference_hop_s = reference_hop_s
        self.model_id = model_id
        self.dim = dim
        self.store_version = store_version
        self.layout = layout
        self.segments = segments
        self.snapshot = snapshot
        self._metadata: dict[int, dict[str, Any]] = {}
        self._meta_lock = threading.Lock()
        self._reader: Catalog | None = None
        n = layout.n_chunks
        self._selector: Any = None
        self._bitmap: np.ndarray | None = None
        snap_version = -1
        if snapshot is not None:
            snap_version = snapshot.manifest.store_version
            keys = snapshot.ref_keys
            live = live_mask(keys, n)
            self.dead_in_snapshot = int((~live).sum())
            if self.dead_in_snapshot:
                # Bit i set = faiss position i is live; HNSW then returns only live neighbours.
                self._bitmap = np.packbits(live, bitorder="little")
                self._selector = faiss.IDSelectorBitmap(live.shape[0], faiss.swig_ptr(self._bitmap))
        else:
            self.dead_in_snapshot = 0
        self._dead_centroids = 0
        if snapshot is not None and snapshot.centroids is not None:
            self._dead_centroids = int((~live_mask(snapshot.centroids.keys, n)).sum())
        # Delta: live references the snapshot does not contain, searched exactly.
        delta_keys = layout.keys[layout.added_version[layout.keys] > snap_version]
        self.delta_keys = delta_keys
        self._delta: Any = None
        self._delta_ref = np.zeros(0, np.int64)
        self._delta_ord = np.zeros(0, np.int32)
        self._delta_centroids: np.ndarray | None = None
        if delta_keys.size:
            vecs, rk, od = [], [], []
            for k in delta_keys:
                v = self.ref_vectors(int(k))
                vecs.append(v.astype(np.float32))
                rk.append(np.full(v.shape[0], k, np.int64))
                od.append(np.arange(v.shape[0], dtype=np.int32))
            delta_rows = np.concatenate(vecs)
            self._delta = faiss.IndexFlatIP(dim)
            self._delta.add(delta_rows)
            self._delta_ref = np.concatenate(rk)
            self._delta_ord = np.concatenate(od)
            _, self._delta_centroids = reference_centroids(delta_rows, self._delta_ref)

    # -------------------------------------------------------------- construction

    @classmethod
    def open(
        cls,
        catalog_path: str | os.PathLike[str],
        *,
        ef_search: int | None = None,
        verify: bool = True,
        snapshot: Snapshot | None = None,
    ) -> SearchView:
        """Read the store and the CURRENT snapshot into a new view."""
        path = Path(catalog_path)
        for attempt in range(5):
            with Catalog.open(path, "r") as cat:
                try:
                    with cat.reading():
                        version = cat.version
                        layout = cat.layout()
                        # Plain ndarray views of the maps: the same pages, without
                        # np.memmap's per-slice Python overhead on the query path.
                        segments: dict[int, np.ndarray] = {
                            k: v.view(np.ndarray)
                            for k, v in cat.segments(verify=verify).items()}
                        dim = cat.dim
                        model_id = cat.model_id
                        features = cat.features(verify=verify)
                        hop = cat.reference_hop_seconds
                except CatalogCorruptError:
                    # A concurrent compaction may have unlinked a segment between our reads.
                    if attempt < 4 and cat.version != version:
                        continue
                    raise
            if dim is None:
                raise CatalogError(f"catalog {path} is empty")
            snap = snapshot
            if snap is None:
                sp = current_snapshot_path(path)
                snap = None if sp is None else Snapshot.load(sp, verify=verify, ef_search=ef_search)
            if snap is not None and (snap.manifest.model_id != model_id or snap.manifest.dim != dim):
                raise CatalogError(
                    f"snapshot {snap.path} was built for model {snap.manifest.model_id!r} "
                    f"({snap.manifest.dim}-d), catalog holds {model_id!r} ({dim}-d): rebuild it"
                )
            if snap is not None and snap.manifest.store_version > version:
                # Snapshot newer than what we read: re-read the store.
                continue
            return cls(path, model_id=model_id, dim=dim, store_version=version, layout=layout,
                       segments=segments, snapshot=snap, features=features,
                       reference_hop_s=hop)
        raise CatalogError(f"catalog {path} kept changing while being opened")

    # -------------------------------------------------------------- queries

    @property
    def snapshot_name(self) -> str | None:
        return None if self.snapshot is None else self.snapshot.manifest.name

    @property
    def n_chunks(self) -> int:
        return int(self.layout.n_chunks.sum())

    def ref_vectors(self, key: int) -> np.ndarray:
        """float16 [n, D] rows of a live reference (a view into the memory map)."""
        lay = self.layout
        n = int(lay.n_chunks[key])
        s = int(lay.row_start[key])
        return self.segments[int(lay.segment[key])][s : s + n]

    def ref_features(self, key: int) -> np.ndarray | None:
        """Stored feature frames [T, bins] uint8 of a live reference (a view into the memory
        map; value ~= q / 255 * ``features.scale[key]``, which is 1 for HPCP; frame i starts
        at i / ``feature_fps`` s), or None when the catalog holds none for it (added without
        features, or before they were stored)."""
        if not self.is_live(key) or not self.features.has(key):
            return None
        return self.features.get(key)

    @property
    def feature_fps(self) -> float | None:
        """Frames per second of the stored feature sequences (None: none stored)."""
        return self.features.fps

    def ref_starts(self, key: int) -> np.ndarray:
        b = int(self.layout.chunk_base[key])
        return self.layout.starts[b : b + int(self.layout.n_chunks[key])]

    def is_live(self, key: int) -> bool:
        n = self.layout.n_chunks
        return 0 <= key < n.shape[0] and n[key] > 0

    @property
    def projected(self) -> ProjectedRows | None:
        """The snapshot's projected rows for stage-2 screening (projected HNSW-flat or -SQ
        snapshots only; a view of the index's own storage)."""
        return None if self.snapshot is None else self.snapshot.projected

    @property
    def compressed(self) -> bool:
        """Whether the snapshot's similarities are approximate (compressed or projected)."""
        if self.snapshot is None:
            return False
        return IndexParams(**self.snapshot.manifest.params).approximate(self.dim)

    def exact_sims(self, queries: np.ndarray, keys: np.ndarray, ords: np.ndarray) -> np.ndarray:
        """Exact inner products [M, k] of each query row with chunks (keys, ords) [M, k]
        (-inf where a key is -1)."""
        import torch

        lay = self.layout
        out = np.full(keys.shape, -np.inf, np.float32)
        ok = np.flatnonzero(keys.reshape(-1) >= 0)
        if not ok.size:
            return out
        kk = keys.reshape(-1)[ok]
        segs = lay.segment[kk]
        rows = lay.row_start[kk] + ords.reshape(-1)[ok]
        # One fancy index per segment, in segment order; one product for all rows.
        order = np.argsort(segs, kind="stable")
        cuts = np.flatnonzero(np.diff(segs[order])) + 1
        vecs = np.empty((ok.size, self.dim), np.float16)
        for part in np.split(order, cuts):
            vecs[part] = self.segments[int(segs[part[0]])][rows[part]]
        qrows = queries[ok // keys.shape[1]]
        sims = (torch.from_numpy(vecs).float() * torch.from_numpy(qrows)).sum(1).numpy()
        out.reshape(-1)[ok] = sims
        return out

    def stage1(self, queries: np.ndarray, k: int, refine: int = 1,
               exact: bool = True) -> Stage1Result:
        """Top-k live neighbours of each query row across snapshot and delta.

        For approximate snapshots (SQ8, PQ, or projected by ``pca_dim``), ``k * refine``
        neighbours are fetched by approximate similarity and re-scored exactly from the
        float16 store before the top k are kept: PQ's coarse distances alone lose
        many true neighbours, the store already holds the exact vectors, and exact
        similarities rank consistently with the delta index's. ``exact=False`` keeps
        the index's own similarities (for a caller that screens in the projected space
        and scores its leaders exactly later).
        """
        import faiss

        fa: Any = faiss  # SearchParametersHNSW is missing from faiss's type stubs
        m = queries.shape[0]
        sims_parts, key_parts, ord_parts = [], [], []
        if self.snapshot is not None and self.snapshot.index.ntotal:
            idx = self.snapshot.index
            rescore = exact and self.compressed
            fetch = k * refine if rescore else k
            kk = min(fetch, idx.ntotal)
            ef = max(hnsw_of(idx).efSearch, kk)
            hp = (fa.SearchParametersHNSW(sel=self._selector, efSearch=ef)
                  if self._selector is not None else fa.SearchParametersHNSW(efSearch=ef))
            if isinstance(idx, faiss.IndexPreTransform):
                params = fa.SearchParametersPreTransform(index_params=hp)
                d, i = idx.search(queries, kk, params=params)
            else:
                d, i = idx.search(queries, kk, params=hp)
            valid = i >= 0
            ii = np.where(valid, i, 0)
            keys = np.where(valid, self.snapshot.ref_keys[ii], -1)
            ords = self.snapshot.ordinals[ii]
            if rescore:
                d = self.exact_sims(queries, keys, ords)
                top = np.argsort(-d, axis=1, kind="stable")[:, :k]
                d = np.take_along_axis(d, top, 1)
                keys = np.take_along_axis(keys, top, 1)
                ords = np.take_along_axis(ords, top, 1)
            sims_parts.append(np.where(keys >= 0, d, -np.inf))
            key_parts.append(keys)
            ord_parts.append(ords)
        if self._delta is not None:
            kk = min(k, self._delta.ntotal)
            d, i = self._delta.search(queries, kk)
            sims_parts.append(d)
            key_parts.append(self._delta_ref[i])
            ord_parts.append(self._delta_ord[i])
        if not sims_parts:
            z = np.zeros((m, 0))
            return Stage1Result(z.astype(np.float32), z.astype(np.int64), z.astype(np.int32))
        sims = np.concatenate(sims_parts, axis=1)
        keys = np.concatenate(key_parts, axis=1)
        ords = np.concatenate(ord_parts, axis=1)
        if len(sims_parts) > 1:
            order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            sims = np.take_along_axis(sims, order, 1)
            keys = np.take_along_axis(keys, order, 1)
            ords = np.take_along_axis(ords, order, 1)
        return Stage1Result(sims.astype(np.float32), keys.astype(np.int64), ords.astype(np.int32))

    def centroid_candidates(self, queries: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``r`` live references whose centroids are nearest the query's centroid
        (snapshot graph plus the delta's, searched exactly): (keys, similarities), best
        first. Empty when the snapshot predates centroids and there is no delta."""
        qc = query_centroid(queries)
        parts_k, parts_s = [], []
        if self.snapshot is not None and self.snapshot.centroids is not None:
            k, sims = self.snapshot.centroids.search(qc, r, self.layout.n_chunks,
                                                     dead=self._dead_centroids)
            parts_k.append(k)
            parts_s.append(sims)
        if self._delta_centroids is not None:
            parts_k.append(self.delta_keys)
            parts_s.append((self._delta_centroids @ qc[0]).astype(np.float32))
        if not parts_k:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        keys = np.concatenate(parts_k)
        sims = np.concatenate(parts_s)
        top = np.argsort(-sims, kind="stable")[:r]
        return keys[top], sims[top]

    def metadata(self, keys: list[int]) -> dict[int, dict[str, Any]]:
        """Reference metadata by key (cached; read from SQLite on first use)."""
        with self._meta_lock:
            missing = [k for k in keys if k not in self._metadata]
            if missing:
                if self._reader is None:
                    self._reader = Catalog.open(self.catalog_path, "r")
                for k, ref in self._reader.get_by_keys(missing).items():
                    self._metadata[k] = ref.metadata()
            return {k: self._metadata.get(k, {}) for k in keys}

    def close(self) -> None:
        with self._meta_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def metadata_id(self, key: int) -> str:
        return str(self.metadata([key])[key].get("id", key))


class SnapshotWatcher:
    """Keeps a current :class:`SearchView`, swapping in a new one when the catalog changes.

    ``poll`` (called by the background thread every ``poll_seconds``, or by hand)
    compares the ``CURRENT`` pointer and the catalog version with the view's; on a
    change it builds the new view off to the side and replaces ``self._view`` in one
    assignment, so a query in flight finishes on the view it started with.
    """

    def __init__(
        self,
        catalog_path: str | os.PathLike[str],
        *,
        poll_seconds: float = 5.0,
        ef_search: int | None = None,
        verify: bool = True,
        on_swap: Callable[[SearchView], None] | None = None,
    ) -> None:
        self.catalog_path = Path(catalog_path)
        self.poll_seconds = poll_seconds
        self.ef_search = ef_search
        self.verify = verify
        self.on_swap = on_swap
        self.swaps = 0
        self.last_error: BaseException | None = None
        self._view = SearchView.open(self.catalog_path, ef_search=ef_search, verify=verify)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> SearchView:
        return self._view

    def poll(self) -> bool:
        """Swap in a new view if the catalog or its snapshot changed; True if swapped."""
        view = self._view
        with Catalog.open(self.catalog_path, "r") as cat:
            version = cat.version
        name = current_snapshot_name(self.catalog_path)
        if version == view.store_version and name == view.snapshot_name:
            return False
        snap = view.snapshot if name == view.snapshot_name else None
        new = SearchView.open(self.catalog_path, ef_search=self.ef_search, verify=self.verify,
                              snapshot=snap)
        self._view = new
        self.swaps += 1
        log.info("snapshot.swapped", snapshot=new.snapshot_name, version=new.store_version,
                 delta_refs=int(new.delta_keys.size), dead=new.dead_in_snapshot)
        if self.on_swap is not None:
            self.on_swap(new)
        return True

    def start(self) -> SnapshotWatcher:
        self._thread = threading.Thread(target=self._loop, name="snapshot-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
                self.last_error = None
            except Exception as exc:  # keep serving the old view; report, retry next poll
                self.last_error = exc
                log.error("snapshot.poll_failed", error=str(exc))

    def __enter__(self) -> SnapshotWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
