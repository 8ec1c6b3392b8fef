"""Stage-2 screening in the projected space of a ``pca_dim`` snapshot.

A projected HNSW-flat snapshot already holds every chunk as a ``pca_dim``-d float32
row (the graph's own storage). Screening computes MaxMean for all stage-2 candidates
on those rows, a quarter of the full dimension and without converting float16, and
only the leaders are then scored exactly from the float16 store. At 1M chunks with
K=150 this is what brings stage 2 from the dominant cost to a small one (see
docs/catalog.md); exhaustive mode never screens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streamcover.catalog.store import RefLayout


def projection_of(index: Any) -> np.ndarray | None:
    """The ``[p, D]`` projection of a projected (``pca_dim``) index, or None."""
    import faiss

    if not isinstance(index, faiss.IndexPreTransform):
        return None
    chain: Any = index.chain  # a SWIG vector; the stubs call it a list
    if chain.size() != 1:
        return None
    lt: Any = faiss.downcast_VectorTransform(chain.at(0))
    return faiss.vector_to_array(lt.A).reshape(lt.d_out, lt.d_in).astype(np.float32)


def behind_projection(index: Any, projection: np.ndarray) -> Any:
    """``index`` (over ``p`` dims) wrapped to take full-dimension vectors through the fixed
    ``[p, D]`` ``projection``; :func:`projection_of` reads it back."""
    import faiss

    fa: Any = faiss  # faiss's stubs miss the SWIG overloads used here
    p, d = projection.shape
    lt = fa.LinearTransform(d, p, False)
    faiss.copy_array_to_vector(np.ascontiguousarray(projection, np.float32).ravel(), lt.A)
    lt.is_trained = True
    # faiss's Python constructor keeps lt and index referenced for the wrapper's lifetime.
    return fa.IndexPreTransform(lt, index)


@dataclass(frozen=True)
class ProjectedRows:
    """The projected chunk rows of a snapshot, addressable by reference key.

    ``rows`` is a view into the faiss index's storage (no copy), so it lives as long as
    ``index`` does; ``ref_start[key]`` is the first row of a reference (-1 if the
    snapshot does not hold it) and its rows follow in ordinal order, or through
    ``order`` when the snapshot's rows are not grouped that way.
    """

    matrix: np.ndarray  # [p, D] float32: projected = x @ matrix.T
    rows: np.ndarray  # [n, p] float32
    ref_start: np.ndarray  # [n_keys] int64
    ref_len: np.ndarray  # [n_keys] int64
    order: np.ndarray | None  # [n] int64 snapshot row of the i-th row in key order
    index: Any  # keeps the faiss storage alive

    @classmethod
    def of(cls, index: Any, ref_keys: np.ndarray, ordinals: np.ndarray) -> ProjectedRows | None:
        """The projected rows of a snapshot's ``index`` (rows mapped to ``ref_keys`` /
        ``ordinals``), or None if it is not a projected HNSW-flat index (SQ8/PQ storage
        holds codes, not rows). Built once per snapshot when it loads."""
        import faiss

        matrix = projection_of(index)
        if matrix is None:
            return None
        inner: Any = faiss.downcast_index(index.index)
        if not isinstance(inner, faiss.IndexHNSWFlat):
            return None
        storage: Any = faiss.downcast_index(inner.storage)
        n, p = int(storage.ntotal), int(storage.d)
        if n == 0:
            return None
        rows = faiss.rev_swig_ptr(storage.get_xb(), n * p).reshape(n, p)
        keys, ords = ref_keys, ordinals
        # Builds write references whole and in key order; only check that (O(n)) and sort
        # only when it does not hold.
        grouped = bool(np.all((keys[1:] > keys[:-1])
                              | ((keys[1:] == keys[:-1]) & (ords[1:] == ords[:-1] + 1))))
        order = None if grouped else np.lexsort((ords, keys))
        sorted_keys = keys if order is None else keys[order]
        first = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        counts = np.diff(np.r_[first, n])
        uniq = sorted_keys[first]
        ref_start = np.full(int(uniq.max()) + 1, -1, np.int64)
        ref_len = np.zeros(int(uniq.max()) + 1, np.int64)
        ref_start[uniq] = first
        ref_len[uniq] = counts
        return cls(matrix, rows, ref_start, ref_len, order, index)

    def project(self, x: np.ndarray) -> np.ndarray:
        """Project full-dimension rows (any float dtype) to ``[n, p]`` float32."""
        return np.asarray(x, dtype=np.float32) @ self.matrix.T

    def gather(self, layout: RefLayout, segments: dict[int, np.ndarray],
               keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Projected rows of ``keys`` concatenated in the order given, and each key's
        length. A key the snapshot lacks (a delta reference) is projected from the
        float16 store on the fly."""
        lengths = layout.n_chunks[keys].astype(np.int64)
        p = self.matrix.shape[0]
        if not keys.size:
            return np.zeros((0, p), np.float32), lengths
        inside = keys < self.ref_start.shape[0]
        starts = np.where(inside, self.ref_start[np.where(inside, keys, 0)], -1)
        held = (starts >= 0) & (self.ref_len[np.where(inside, keys, 0)] == lengths)
        if self.order is None and held.all():
            # One fancy index over all rows (faster than a slice per reference).
            rows = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
            return self.rows[rows + np.arange(rows.shape[0])], lengths
        parts: list[np.ndarray] = []
        for key, a, n in zip(keys.tolist(), starts.tolist(), lengths.tolist(), strict=True):
            if a >= 0 and self.ref_len[key] == n:
                parts.append(self.rows[a : a + n] if self.order is None
                             else self.rows[self.order[a : a + n]])
            else:
                s = int(layout.row_start[key])
                parts.append(self.project(segments[int(layout.segment[key])][s : s + n]))
        return np.concatenate(parts), lengths
