"""The faiss index a snapshot holds: its parameters and how an empty one is made.

One function, :func:`make_index`, turns ``settings.catalog``'s index knobs
(:class:`IndexParams`) into an empty inner-product HNSW index: flat, SQ8, SQ4 or PQ
storage, optionally behind a fixed linear projection onto the top directions of the
catalog's uncentred second moment (``pca_dim``), which keeps inner products as close
to the originals as any rank-``pca_dim`` map can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamcover.catalog.errors import CatalogError
from streamcover.catalog.screen import behind_projection
from streamcover.config import CatalogSettings, IndexKind

# settings.catalog's defaults, which the library's own defaults take.
CATALOG_DEFAULTS = CatalogSettings()


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
