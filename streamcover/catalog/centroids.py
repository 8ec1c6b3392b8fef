"""Reference centroids: a second way for stage 1 to reach a candidate.

Stage 1 proper finds references with a chunk among each query chunk's K nearest. A
reference that is *moderately* close to every query chunk, the profile MaxMean rewards,
can miss all of those lists when the catalog is large. Its centroid (the normalised mean
of its unit chunk vectors) is then close to the query's centroid, so a small HNSW graph
over one vector per reference names it. On the 1M-chunk benchmark this lifts recall@10
against exhaustive MaxMean more per millisecond than a larger K does (docs/catalog.md).

The graph lives in the snapshot beside the chunk graph (``centroids.faiss`` and
``centroid_keys.npy``), uses the chunk graph's projection when it has one, and is
extended with new references by incremental builds like the chunk graph; removed
references are filtered at query time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamcover.catalog.records import live_mask
from streamcover.catalog.screen import behind_projection


def reference_centroids(vectors: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys in order of first row, unit centroids [R, D] float32) of rows grouped by
    key: each reference's rows must be contiguous, as the store yields them."""
    keys = np.asarray(keys)
    if keys.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, vectors.shape[1]), np.float32)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    if np.unique(keys[starts]).size != starts.size:
        raise ValueError("reference_centroids: a reference's rows are not contiguous")
    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    sums = np.add.reduceat(x / np.maximum(norms, 1e-12), starts, axis=0)
    cents = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return keys[starts].astype(np.int64), cents.astype(np.float32)


def query_centroid(q: np.ndarray) -> np.ndarray:
    """The unit mean ``[1, D]`` of a query's unit chunk vectors."""
    m = np.asarray(q, dtype=np.float32).mean(axis=0, keepdims=True)
    return (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)


def make_centroid_index(dim: int, m: int, ef_construction: int, projection: np.ndarray | None) -> Any:
    """An empty inner-product HNSW graph for centroids, behind ``projection`` if given."""
    import faiss

    out_dim = dim if projection is None else projection.shape[0]
    idx = faiss.IndexHNSWFlat(out_dim, m, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = ef_construction
    return idx if projection is None else behind_projection(idx, projection)


@dataclass
class CentroidIndex:
    """One unit vector per reference in an HNSW graph; ``keys[i]`` is row i's reference."""

    index: Any
    keys: np.ndarray  # [R] int64

    def search(self, query: np.ndarray, r: int, live: np.ndarray,
               dead: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The ``r`` live references whose centroids are nearest ``query`` [1, D]:
        (keys, similarities), best first. ``live[key]`` > 0 marks live references;
        ``dead`` is how many of the graph's rows are not live (removed references stay
        until a full rebuild), so the search over-fetches only as much as they need.
        If removed references still crowd out live ones, it searches again, wider."""
        n = int(self.index.ntotal)
        if r <= 0 or n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if dead <= 0:
            k = min(n, r)
        else:
            alive_frac = max(1.0 - dead / n, 1.0 / n)
            k = min(n, int(np.ceil(1.1 * r / alive_frac)) + 8)
        while True:
            keys, sims = self._search(query, k)
            alive = live_mask(keys, live)
            if int(alive.sum()) >= r or k >= n:
                return keys[alive][:r], sims[alive][:r].astype(np.float32)
            k = min(n, 2 * k)

    def _search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        fa: Any = faiss
        hp = fa.SearchParametersHNSW(efSearch=max(k, 64))
        params = (fa.SearchParametersPreTransform(index_params=hp)
                  if isinstance(self.index, faiss.IndexPreTransform) else hp)
        d, i = self.index.search(query, k, params=params)
        ok = i[0] >= 0
        return self.keys[i[0][ok]], d[0][ok]
