"""Reference centroids: the pure helpers, and the centroid graph in real snapshots."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from catalog_helpers import MODEL, PARAMS, as_input

from streamcover.catalog.centroids import query_centroid, reference_centroids
from streamcover.catalog.factory import IndexParams
from streamcover.catalog.search import TwoStageSearcher
from streamcover.catalog.snapshot import CENTROID_FILES, build_snapshot, current_snapshot_path
from streamcover.catalog.store import Catalog
from streamcover.catalog.synthetic import SyntheticCorpus, SyntheticRef
from streamcover.catalog.view import SearchView


def test_reference_centroids_are_unit_means_of_unit_rows() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 8)).astype(np.float32) * 3
    keys = np.array([4, 4, 4, 9, 2, 2, 2])
    ck, cv = reference_centroids(x, keys)
    assert ck.tolist() == [4, 9, 2]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    want = unit[4:7].mean(0)
    np.testing.assert_allclose(cv[2], want / np.linalg.norm(want), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(cv, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="contiguous"):
        reference_centroids(x, np.array([1, 1, 2, 1, 3, 3, 3]))
    qc = query_centroid(unit[:3])
    assert qc.shape == (1, 8) and abs(float(np.linalg.norm(qc)) - 1) < 1e-6


@pytest.mark.parametrize("pca_dim", [0, 16])
def test_snapshot_centroids_find_references_and_follow_updates(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef], pca_dim: int
) -> None:
    params = IndexParams("hnsw", m=16, ef_construction=64, ef_search=64, pca_dim=pca_dim)
    path = make_catalog(n=80, params=params)
    view = SearchView.open(path)
    snap = view.snapshot
    assert snap is not None and snap.centroids is not None
    assert sorted(snap.centroids.keys.tolist()) == sorted(view.layout.keys.tolist())
    # A query made of a reference's chunks names that reference first by centroid.
    target = refs[21]
    key = int(view.layout.keys[[view.metadata_id(int(k)) == target.id
                                for k in view.layout.keys]][0])
    keys, sims = view.centroid_candidates(target.vectors[2:7], 5)
    assert int(keys[0]) == key and sims[0] > sims[-1]
    view.close()
    # Removed references are filtered; added ones are reached through the delta, then
    # through the incrementally extended graph.
    with Catalog.open(path, "a") as cat:
        cat.remove(target.id)
        cat.add_references([as_input(r) for r in refs[80:84]], MODEL)
    view = SearchView.open(path)
    keys, _ = view.centroid_candidates(target.vectors[2:7], 10)
    assert key not in keys.tolist()
    new_key = int(view.delta_keys[1])
    keys, _ = view.centroid_candidates(refs[81].vectors[1:5], 3)
    assert int(keys[0]) == new_key
    view.close()
    with Catalog.open(path, "a") as cat:
        snap_path = build_snapshot(cat, params)
    manifest = json.loads((snap_path / "manifest.json").read_text())
    assert manifest["incremental_from"] is not None
    view = SearchView.open(path)
    assert view.delta_keys.size == 0
    keys, _ = view.centroid_candidates(refs[81].vectors[1:5], 3)
    assert int(keys[0]) == new_key
    view.close()


def test_snapshot_without_centroids_still_searches_and_gains_them(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    """A snapshot written before centroids existed loads without them; the next
    incremental build gives every reference its centroid."""
    path = make_catalog(n=40)
    snap_path = current_snapshot_path(path)
    assert snap_path is not None
    manifest = json.loads((snap_path / "manifest.json").read_text())
    for f in CENTROID_FILES:
        del manifest["files"][f]
        (snap_path / f).unlink()
    (snap_path / "manifest.json").write_text(json.dumps(manifest))
    view = SearchView.open(path)
    assert view.snapshot is not None and view.snapshot.centroids is None
    hits = TwoStageSearcher(view).search(refs[5].vectors[:3], np.zeros(3))
    assert hits[0].reference_id == refs[5].id
    assert view.centroid_candidates(refs[5].vectors[:3], 5)[0].size == 0
    view.close()
    with Catalog.open(path, "a") as cat:
        cat.add_references([as_input(r) for r in refs[40:42]], MODEL)
        build_snapshot(cat, PARAMS)
    view = SearchView.open(path)
    assert view.snapshot is not None and view.snapshot.centroids is not None
    assert view.snapshot.centroids.keys.size == 42
    view.close()


def test_centroid_candidates_raise_recall_at_small_k(
    make_catalog: Callable[..., Path], corpus: SyntheticCorpus
) -> None:
    """With K=2, recall@10 against exhaustive MaxMean is poor; the centroid candidates
    recover much of it (a measurement that fails if they find nothing useful)."""
    path = make_catalog()
    view = SearchView.open(path)
    plain = TwoStageSearcher(view, top_k=2, centroid_candidates=0)
    with_c = TwoStageSearcher(view, top_k=2, centroid_candidates=30)
    r_plain, r_cent = [], []
    for w in range(0, 60, 3):
        q, _ = corpus.query(w, 5, seed=w)
        ek, es = plain.exhaustive_scores(q)
        ex = set(ek[np.argsort(-es, kind="stable")[:10]].tolist())
        for s, out in ((plain, r_plain), (with_c, r_cent)):
            tk, ts = s.two_stage_scores(q)
            out.append(len(ex & set(tk[np.argsort(-ts, kind="stable")[:10]].tolist())) / 10)
    assert np.mean(r_cent) > np.mean(r_plain) + 0.05
    view.close()


def test_centroid_search_refills_when_removed_references_crowd_the_top(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    """Removed references stay in the centroid graph until a full rebuild. When the ones
    nearest a query outnumber the over-fetch, the search widens instead of returning
    fewer than asked."""
    params = IndexParams("hnsw", m=16, ef_construction=64, ef_search=64)
    path = make_catalog(n=80, params=params)
    q = refs[5].vectors[1:6]
    view = SearchView.open(path)
    before, _ = view.centroid_candidates(q, 40)
    nearest_ids = [view.metadata_id(int(k)) for k in before[:15]]
    view.close()
    with Catalog.open(path, "a") as cat:
        for ref_id in nearest_ids:
            cat.remove(ref_id)
    view = SearchView.open(path)
    assert view.snapshot is not None and view.delta_keys.size == 0
    keys, sims = view.centroid_candidates(q, 10)
    assert keys.tolist() == before[15:25].tolist()
    assert np.all(np.diff(sims) <= 0)
    view.close()
