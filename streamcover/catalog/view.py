"""The read-only view a query runs against, and stage 1 of the search over it.

A :class:`SearchView` is an immutable picture of the catalog: the store layout, the
memory-mapped segments and stored features, the ``CURRENT`` snapshot, and two corrections
that keep it current between snapshots: references removed since the snapshot are
filtered inside the HNSW search (a faiss ``IDSelectorBitmap`` over live positions, so the
top-K are all live), and references added since are searched exactly in a small
in-memory delta index until the next build folds them in. Stage 1 (each query chunk's
nearest chunks, and the references with the nearest centroids) is :meth:`SearchView.stage1`
and :meth:`SearchView.centroid_candidates`; :func:`stage1_candidates` turns them into the
candidate references (with a stream's :class:`Stage1Memo`) that ``search.py`` scores.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamcover.catalog.centroids import query_centroid, reference_centroids
from streamcover.catalog.errors import CatalogCorruptError, CatalogError
from streamcover.catalog.factory import IndexParams, hnsw_of
from streamcover.catalog.records import FeatureStore, RefLayout, live_mask
from streamcover.catalog.screen import ProjectedRows
from streamcover.catalog.snapshot import Snapshot, current_snapshot_path
from streamcover.catalog.store import Catalog


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


class Stage1Memo:
    """Stage-1 results of one query stream's chunks, reused while the catalog view stays.

    A live stream's query is its last few chunks and an upload's is all of them; each new
    window adds one chunk, so without the memo every window would repeat the HNSW search
    of every earlier chunk. Entries are dropped when the view changes (a new snapshot or
    store version) and when their chunk leaves the query.
    """

    def __init__(self) -> None:
        self._view: weakref.ref[SearchView] | None = None
        self._rows: dict[Hashable, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def bind(self, view: SearchView, chunk_ids: Sequence[Hashable]) -> None:
        """Forget everything if ``view`` is not the one the entries came from, and
        entries whose chunk is not among ``chunk_ids``."""
        if self._view is None or self._view() is not view:
            self._rows.clear()
            self._view = weakref.ref(view)
            return
        keep = set(chunk_ids)
        for cid in [c for c in self._rows if c not in keep]:
            del self._rows[cid]

    def get(self, chunk_id: Hashable) -> tuple[np.ndarray, np.ndarray] | None:
        return self._rows.get(chunk_id)

    def put(self, chunk_id: Hashable, row: tuple[np.ndarray, np.ndarray]) -> None:
        self._rows[chunk_id] = row


def stage1_candidates(view: SearchView, q: np.ndarray, *, top_k: int, fetch: int, refine: int,
                      max_candidates: int, centroid_candidates: int, exact: bool,
                      chunk_ids: Sequence[Hashable] | None = None,
                      memo: Stage1Memo | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate reference keys (best first) and their best stage-1 similarity.

    Each query chunk contributes its ``top_k`` nearest *distinct* references among its
    ``fetch`` nearest chunks: a reference near the query has several neighbouring chunks
    (its chunks overlap in time), so K chunk neighbours alone would name far fewer than K
    references. The union is capped at ``max_candidates``. With ``chunk_ids`` and a
    ``memo``, chunks already searched on this view are not searched again. Then the
    ``centroid_candidates`` references whose centroids are nearest the query's
    (``streamcover.catalog.centroids``) join the set, after the chunk candidates and with
    a NaN similarity when stage 1 proper did not reach them. ``exact`` as in
    :meth:`SearchView.stage1`.
    """
    rows: list[tuple[np.ndarray, np.ndarray] | None] = [None] * q.shape[0]
    todo = list(range(q.shape[0]))
    if memo is not None and chunk_ids is not None:
        if len(chunk_ids) != q.shape[0]:
            raise ValueError(f"{q.shape[0]} query chunks but {len(chunk_ids)} chunk ids")
        memo.bind(view, chunk_ids)
        todo = []
        for i, cid in enumerate(chunk_ids):
            rows[i] = memo.get(cid)
            if rows[i] is None:
                todo.append(i)
    if todo:
        s1 = view.stage1(q[todo], fetch, refine, exact=exact)
        for i, keys, sims in zip(todo, s1.ref_keys, s1.sims, strict=True):
            ok = keys >= 0
            row = _first_distinct(keys[ok], sims[ok], top_k)
            rows[i] = row
            if memo is not None and chunk_ids is not None:
                memo.put(chunk_ids[i], row)
    found = [r for r in rows if r is not None]
    if found and sum(r[0].size for r in found):
        keys = np.concatenate([r[0] for r in found])
        sims = np.concatenate([r[1] for r in found])
        order = np.argsort(-sims, kind="stable")
        keys, sims = _first_distinct(keys[order], sims[order], max_candidates)
    else:
        keys, sims = np.zeros(0, np.int64), np.zeros(0, np.float32)
    if centroid_candidates > 0:
        # References reached through their centroid only carry a NaN stage-1 similarity.
        ck, _ = view.centroid_candidates(q, centroid_candidates)
        extra = ck[~np.isin(ck, keys)]
        keys = np.concatenate([keys, extra])
        sims = np.concatenate([sims, np.full(extra.size, np.nan, np.float32)])
    return keys, sims


def _first_distinct(keys: np.ndarray, sims: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` distinct keys of a best-first list, with their (best) similarity."""
    _, first = np.unique(keys, return_index=True)
    pick = np.sort(first)[:limit]
    return keys[pick], sims[pick]
