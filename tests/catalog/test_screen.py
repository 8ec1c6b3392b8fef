"""ProjectedRows: the projected HNSW-flat storage addressed by reference (real faiss)."""

from __future__ import annotations

import numpy as np

from streamcover.catalog.factory import IndexParams, make_index
from streamcover.catalog.records import RefLayout
from streamcover.catalog.screen import ProjectedRows, projection_of


def test_rows_are_found_by_reference_in_any_storage_order() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    params = IndexParams("hnsw", m=8, ef_construction=16, ef_search=16, pca_dim=4)
    index = make_index(8, params, sample=x)
    index.add(x)
    # Storage order is not (key, ordinal) order: the lexsort fallback must map it.
    keys = np.array([2, 2, 1, 1, 1, 3])
    ords = np.array([1, 0, 0, 2, 1, 0], dtype=np.int32)
    proj = ProjectedRows.of(index, keys, ords)
    assert proj is not None and proj.order is not None
    matrix = projection_of(index)
    assert matrix is not None and matrix.shape == (4, 8)
    n_chunks = np.array([0, 3, 2, 1])
    layout = RefLayout(keys=np.array([1, 2, 3]), segment=np.zeros(4, np.int64),
                       row_start=np.zeros(4, np.int64), n_chunks=n_chunks,
                       added_version=np.zeros(4, np.int64), chunk_base=np.zeros(4, np.int64),
                       starts=np.zeros(6, np.float32))
    rows, lengths = proj.gather(layout, {}, np.array([2, 1, 3]))
    assert lengths.tolist() == [2, 3, 1]
    want = x[[1, 0, 2, 4, 3, 5]] @ matrix.T  # key 2 ords 0,1; key 1 ords 0,1,2; key 3
    np.testing.assert_allclose(rows, want, atol=1e-5)
    qp = x[:2] @ matrix.T
    sims, got = proj.similarities(layout, {}, np.array([2, 1, 3]), qp)
    assert got.tolist() == [2, 3, 1]
    np.testing.assert_allclose(sims, want @ qp.T, atol=1e-5)
    # A flat (unprojected) index has no projected rows.
    flat = make_index(8, IndexParams("hnsw", m=8, ef_construction=16))
    flat.add(x)
    assert ProjectedRows.of(flat, keys, ords) is None and projection_of(flat) is None
