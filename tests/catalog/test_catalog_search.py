"""Index snapshots and two-stage search on structured synthetic embeddings (real faiss).

One file because every test shares the module-scoped catalog and snapshot fixtures.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from catalog_helpers import MODEL, PARAMS, as_input

from streamcover.catalog.errors import CatalogCorruptError, CatalogError, ModelMismatchError
from streamcover.catalog.factory import IndexParams, projection
from streamcover.catalog.search import TwoStageSearcher
from streamcover.catalog.snapshot import (
    REFIT_GROWTH,
    BackgroundBuilder,
    Snapshot,
    build_snapshot,
    current_snapshot_path,
)
from streamcover.catalog.store import Catalog
from streamcover.catalog.synthetic import SyntheticCorpus, SyntheticRef
from streamcover.catalog.view import SearchView, Stage1Memo
from streamcover.catalog.watcher import SnapshotWatcher


def _query_from(ref: SyntheticRef, first: int, m: int, corpus_seed: int = 0) -> np.ndarray:
    """A noisy copy of ``m`` consecutive chunks of ``ref`` starting at chunk ``first``."""
    rng = np.random.default_rng(corpus_seed)
    q = ref.vectors[first : first + m] + 0.3 * rng.standard_normal((m, ref.vectors.shape[1])) / 8
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def test_two_stage_finds_reference_and_alignment(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    path = make_catalog()
    s = TwoStageSearcher(SearchView.open(path), top_k=50, max_candidates=250)
    target = refs[37]
    q = _query_from(target, 2, 5)
    qstarts = np.array([100.0, 110.0, 120.0, 130.0, 140.0])
    hits = s.search(q, qstarts, top_n=5, model_id=MODEL)
    assert hits[0].reference_id == target.id
    assert hits[0].metadata["title"] == f"title {target.id}"
    assert hits[0].metadata["work"] == target.work
    assert hits[0].score > hits[1].score
    # Query chunk i came from reference chunk 2+i, which starts at (2+i)*10 s.
    assert [a[0] for a in hits[0].alignment] == qstarts.tolist()
    assert [a[1] for a in hits[0].alignment] == [20.0, 30.0, 40.0, 50.0, 60.0]
    assert all(a[2] > 0.9 for a in hits[0].alignment)
    assert hits[0].ref_chunks == [2, 3, 4, 5, 6]
    # The other version of the same work ranks next: covers cluster.
    assert hits[1].metadata["work"] == target.work
    assert hits[0].catalog_version == s.view.store_version and hits[0].model_id == MODEL
    # Exhaustive mode agrees on the top.
    ex = s.search(q, qstarts, top_n=5, exhaustive=True)
    assert [h.reference_id for h in ex[:2]] == [h.reference_id for h in hits[:2]]
    assert ex[0].score == pytest.approx(hits[0].score, abs=1e-5)
    # Every hit's alignment (taken from the leaders' re-scoring matrix) is what align()
    # computes for that reference on its own.
    view = s.view
    for h in s.search(q, qstarts, top_n=10):
        best, bsim = s.align(view, q, h.ref_key)
        assert h.ref_chunks == best.tolist()
        np.testing.assert_allclose([a[2] for a in h.alignment], bsim, atol=1e-6)


def test_query_from_other_model_refused(make_catalog: Callable[..., Path],
                                        refs: list[SyntheticRef]) -> None:
    path = make_catalog(n=10)
    view = SearchView.open(path)
    with pytest.raises(ModelMismatchError, match="other-model"):
        TwoStageSearcher(view, model_id="other-model")
    s = TwoStageSearcher(view)
    q = refs[0].vectors[:3]
    with pytest.raises(ModelMismatchError, match="other-model"):
        s.search(q, np.zeros(3), model_id="other-model")
    with pytest.raises(ModelMismatchError, match="128-d"):
        s.search(np.ones((3, 128), np.float32), np.zeros(3))
    with pytest.raises(ValueError, match="start times"):
        s.search(q, np.zeros(2))


def test_recall_against_exhaustive(make_catalog: Callable[..., Path],
                                   corpus: SyntheticCorpus) -> None:
    path = make_catalog()
    s = TwoStageSearcher(SearchView.open(path), top_k=50, max_candidates=250)
    r1, r10 = [], []
    for w in range(0, 60, 2):
        q, _ = corpus.query(w, 5, seed=w)
        ek, es = s.exhaustive_scores(q)
        tk, ts = s.two_stage_scores(q)
        ex = ek[np.argsort(-es, kind="stable")[:10]]
        two = tk[np.argsort(-ts, kind="stable")[:10]]
        r1.append(ex[0] == two[0])
        r10.append(len(set(ex.tolist()) & set(two.tolist())) / 10)
        # Stage 2 of a candidate is the exhaustive score of that reference, exactly.
        np.testing.assert_allclose(ts, es[np.searchsorted(ek, tk)], atol=1e-5)
    assert np.mean(r1) == 1.0
    assert np.mean(r10) >= 0.95
    # A tiny K must lose some of the exhaustive top-10 (the measurement can fail).
    s_small = TwoStageSearcher(SearchView.open(path), top_k=1, max_candidates=250,
                               centroid_candidates=0)
    q, _ = corpus.query(0, 5, seed=0)
    ek, es = s.exhaustive_scores(q)
    tk, _ = s_small.two_stage_scores(q)
    assert len(tk) < 10


def test_tombstones_filtered_and_delta_searched(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef], corpus: SyntheticCorpus
) -> None:
    path = make_catalog(n=80)
    watcher = SnapshotWatcher(path, poll_seconds=60)
    s = TwoStageSearcher(watcher, top_k=20)
    target = refs[20]
    q = _query_from(target, 1, 4)
    assert s.search(q, np.arange(4) * 10.0)[0].reference_id == target.id
    with Catalog.open(path, "a") as cat:
        cat.remove(target.id)
    assert watcher.poll()
    view = watcher.current()
    assert view.dead_in_snapshot == target.vectors.shape[0]
    hits = s.search(q, np.arange(4) * 10.0, top_n=200)
    assert target.id not in {h.reference_id for h in hits}
    # stage 1 returns live chunks only, still K of them per query chunk
    s1 = view.stage1(q, 20)
    assert (s1.ref_keys >= 0).all() and s1.ref_keys.shape == (4, 20)
    assert all(view.is_live(int(k)) for k in np.unique(s1.ref_keys))
    # A reference added after the snapshot is found through the delta index.
    new = refs[100]
    with Catalog.open(path, "a") as cat:
        cat.add_references([as_input(new)], MODEL)
    assert watcher.poll()
    assert watcher.current().snapshot_name == view.snapshot_name
    q2 = _query_from(new, 0, 3)
    assert s.search(q2, np.arange(3) * 10.0)[0].reference_id == new.id
    assert not watcher.poll()


def test_incremental_snapshot_and_corrupt_snapshot(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    path = make_catalog(n=60)
    first = current_snapshot_path(path)
    assert first is not None
    with Catalog.open(path, "a") as cat:
        cat.add_references([as_input(r) for r in refs[60:80]], MODEL)
        second = build_snapshot(cat, PARAMS)
    snap = Snapshot.load(second)
    assert snap.manifest.incremental_from == first.name
    assert snap.manifest.n_vectors == sum(r.vectors.shape[0] for r in refs[:80])
    assert snap.manifest.store_version == 3
    view = SearchView.open(path)
    assert view.delta_keys.size == 0
    s = TwoStageSearcher(view)
    assert s.search(_query_from(refs[70], 0, 3), np.zeros(3))[0].reference_id == refs[70].id
    # Corrupt the index file: a clear error, never a silent wrong answer.
    f = second / "index.faiss"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CatalogCorruptError, match="checksum"):
        SearchView.open(path)
    f.write_bytes(bytes(data[:-10]))
    with pytest.raises(CatalogCorruptError, match="bytes"):
        SearchView.open(path, verify=False)


@pytest.mark.parametrize("kind", ["hnsw_sq8", "hnsw_sq4", "hnsw_pq"])
def test_compressed_indexes_find_the_reference(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef], kind: str
) -> None:
    params = IndexParams(kind, m=16, ef_construction=64, ef_search=64, pq_m=16)  # type: ignore[arg-type]
    path = make_catalog(params=params)
    view = SearchView.open(path)
    assert view.compressed
    s = TwoStageSearcher(view, top_k=30, refine=4)
    for i in (3, 44, 90):
        hits = s.search(_query_from(refs[i], 1, 4), np.arange(4) * 10.0)
        assert hits[0].reference_id == refs[i].id
        assert hits[0].ref_chunks == [1, 2, 3, 4]
    raw = (view.snapshot.path / "index.faiss").stat().st_size / view.n_chunks  # type: ignore[union-attr]
    assert raw < 64 * 4  # smaller than the float32 vectors alone


@pytest.mark.parametrize("kind", ["hnsw", "hnsw_sq8"])
def test_projected_index_finds_the_reference_and_extends(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef], kind: str
) -> None:
    """pca_dim: the graph works on a 16-d projection; stage 1 re-scores exactly, so the
    hits and their stage-1 similarities are those of the full vectors."""
    params = IndexParams(kind, m=16, ef_construction=64, ef_search=64, pca_dim=16)  # type: ignore[arg-type]
    path = make_catalog(n=80, params=params)
    view = SearchView.open(path)
    assert view.compressed
    s = TwoStageSearcher(view, top_k=30, refine=2)
    for i in (3, 44, 70):
        q = _query_from(refs[i], 1, 4)
        hits = s.search(q, np.arange(4) * 10.0)
        assert hits[0].reference_id == refs[i].id
        assert hits[0].ref_chunks == [1, 2, 3, 4]
        s1 = view.stage1(q, 5, refine=2)
        exact = view.exact_sims(q, s1.ref_keys, s1.ordinals)
        np.testing.assert_allclose(s1.sims, exact, rtol=0, atol=1e-6)
    raw = (view.snapshot.path / "index.faiss").stat().st_size / view.n_chunks  # type: ignore[union-attr]
    assert raw < 64 * 4  # the 64-d float32 vectors alone would be 256 bytes
    view.close()
    # An incremental rebuild keeps the projection and adds the new references.
    with Catalog.open(path, "a") as cat:
        cat.add_references([as_input(r) for r in refs[80:90]], MODEL)
        snap = build_snapshot(cat, params)
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["incremental_from"] is not None
    assert manifest["params"]["pca_dim"] == 16
    view = SearchView.open(path)
    hits = TwoStageSearcher(view, top_k=30).search(_query_from(refs[85], 0, 3), np.zeros(3))
    assert hits[0].reference_id == refs[85].id
    view.close()


def test_screening_on_projected_rows(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    """Stage 2 screens on the projected HNSW-flat rows and scores its leaders exactly:
    the hits are those of unscreened search, with exact scores; delta references (not in
    the snapshot) are projected on the fly."""
    params = IndexParams("hnsw", m=16, ef_construction=64, ef_search=64, pca_dim=16)
    path = make_catalog(n=80, params=params)
    view = SearchView.open(path)
    proj = view.projected
    assert proj is not None and proj.rows.shape == (view.n_chunks, 16)
    keys = view.layout.keys[[0, 17, 79]]
    rows, lengths = proj.gather(view.layout, view.segments, keys)
    want = np.concatenate([proj.project(view.ref_vectors(int(k))) for k in keys])
    np.testing.assert_allclose(rows, want, atol=2e-3)
    assert lengths.tolist() == [int(view.layout.n_chunks[k]) for k in keys]
    screened = TwoStageSearcher(view, top_k=30, screen_leaders=12)
    wide = TwoStageSearcher(view, top_k=30, screen_leaders=40)
    plain = TwoStageSearcher(view, top_k=30, screen=False)
    assert screened.screens(view) and not plain.screens(view)
    for i in (5, 40, 66):
        q = _query_from(refs[i], 1, 4)
        a = screened.search(q, np.arange(4) * 10.0, top_n=5)
        b = plain.search(q, np.arange(4) * 10.0, top_n=5)
        c = wide.search(q, np.arange(4) * 10.0, top_n=5)
        assert a[0].reference_id == b[0].reference_id == refs[i].id
        # Every reported score is exact, screened or not.
        by_key = {h.ref_key: h.score for h in b}
        for h in a:
            if h.ref_key in by_key:
                assert h.score == pytest.approx(by_key[h.ref_key], abs=1e-5)
        # With enough leaders the screened ranking is the unscreened one.
        assert [h.ref_key for h in c] == [h.ref_key for h in b]
        # Leaders are exact and sort first; the rest are capped below the weakest leader.
        ck, cs = screened.two_stage_scores(q)
        ek = view.layout.keys
        es = screened.rerank(view, q, ek, exact_top=ek.size)
        top = np.argsort(-cs, kind="stable")
        lead, rest = top[:20], top[20:]
        np.testing.assert_allclose(cs[lead], es[np.searchsorted(ek, ck[lead])], atol=1e-5)
        assert rest.size and cs[rest].max() < cs[lead].min()
    view.close()
    # References added after the snapshot are searched (delta) and screened by projecting
    # their float16 rows.
    with Catalog.open(path, "a") as cat:
        cat.add_references([as_input(r) for r in refs[80:84]], MODEL)
    view = SearchView.open(path)
    assert view.delta_keys.size == 4 and view.projected is not None
    hits = TwoStageSearcher(view, top_k=30, screen_leaders=12).search(
        _query_from(refs[82], 0, 3), np.zeros(3))
    assert hits[0].reference_id == refs[82].id
    ek, es = TwoStageSearcher(view).exhaustive_scores(_query_from(refs[82], 0, 3))
    assert hits[0].score == pytest.approx(float(es.max()), abs=1e-5)
    view.close()


@pytest.mark.parametrize("kind", ["hnsw_sq8", "hnsw_sq4"])
def test_scalar_quantised_snapshots_screen_on_their_codes(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef], kind: str
) -> None:
    """SQ storage holds codes: screening decodes them (SQ8 straight from the codes, SQ4
    through faiss) and the similarities are those of the decoded rows; the hits keep
    exact scores."""
    import faiss

    params = IndexParams(kind, m=16, ef_construction=64, ef_search=64, pca_dim=16)  # type: ignore[arg-type]
    view = SearchView.open(make_catalog(n=60, params=params))
    proj = view.projected
    assert proj is not None and proj.codec is not None
    assert (proj.affine is not None) == (kind == "hnsw_sq8")
    keys = view.layout.keys[[3, 0, 41, 59]]
    q = _query_from(refs[41], 0, 3)
    qp = proj.project(q)
    sims, lengths = proj.similarities(view.layout, view.segments, keys, qp)
    assert lengths.tolist() == [int(view.layout.n_chunks[k]) for k in keys]
    decoded = np.concatenate([
        faiss.downcast_index(view.snapshot.index.index).storage.sa_decode(  # type: ignore[union-attr]
            np.ascontiguousarray(proj.rows[proj.ref_start[k]: proj.ref_start[k] + n]))
        for k, n in zip(keys.tolist(), lengths.tolist(), strict=True)])
    np.testing.assert_allclose(sims, decoded @ qp.T, atol=1e-4)
    # ... which are the projected float vectors up to the quantisation step.
    want = np.concatenate([proj.project(view.ref_vectors(int(k))) for k in keys]) @ qp.T
    assert np.abs(sims - want).max() < (0.03 if kind == "hnsw_sq8" else 0.3)
    screened = TwoStageSearcher(view, top_k=30, screen_leaders=12)
    plain = TwoStageSearcher(view, top_k=30, screen=False)
    assert screened.screens(view) and not plain.screens(view)
    for i in (5, 41):
        a = screened.search(_query_from(refs[i], 1, 4), np.arange(4) * 10.0, top_n=3)
        b = plain.search(_query_from(refs[i], 1, 4), np.arange(4) * 10.0, top_n=3)
        assert a[0].reference_id == b[0].reference_id == refs[i].id
        assert a[0].score == pytest.approx(b[0].score, abs=1e-5)
    view.close()


def test_pq_snapshots_do_not_screen(make_catalog: Callable[..., Path]) -> None:
    """PQ codes are too coarse to pick leaders with: stage 2 stays on the float16 store."""
    params = IndexParams("hnsw_pq", m=16, ef_construction=64, ef_search=64, pq_m=8, pca_dim=16)
    view = SearchView.open(make_catalog(n=30, params=params))
    assert view.projected is None and not TwoStageSearcher(view).screens(view)
    view.close()


def test_projection_at_or_above_the_embedding_dimension_is_off(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    """The default pca_dim (128) on smaller embeddings (64-d here) builds an unprojected
    graph whose similarities are exact, rather than refusing."""
    import faiss

    for pca_dim in (64, 128):
        params = IndexParams("hnsw", m=16, ef_construction=32, pca_dim=pca_dim)
        view = SearchView.open(make_catalog(n=20, params=params, name=f"cat{pca_dim}"))
        assert view.snapshot is not None
        assert not isinstance(view.snapshot.index, faiss.IndexPreTransform)
        assert not view.compressed and view.projected is None
        hits = TwoStageSearcher(view).search(_query_from(refs[7], 0, 3), np.zeros(3))
        assert hits[0].reference_id == refs[7].id
        view.close()
    with pytest.raises(CatalogError, match="pca_dim=64"):
        projection(np.ones((10, 64), np.float32), 64)


def test_projection_is_refitted_as_the_catalog_grows(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    """A projection and SQ8 ranges fitted on a small first catalog are refitted by a full
    rebuild once the catalog has REFIT_GROWTH times the rows; smaller additions extend."""
    params = IndexParams("hnsw_sq8", m=16, ef_construction=64, ef_search=64, pca_dim=16)
    path = make_catalog(n=10, params=params)
    first = json.loads((current_snapshot_path(path) / "manifest.json").read_text())  # type: ignore[operator]
    view = SearchView.open(path)
    assert first["trained_rows"] == view.n_chunks
    view.close()
    with Catalog.open(path, "a") as cat:  # a few more: extended, fit kept
        cat.add_references([as_input(r) for r in refs[10:14]], MODEL)
        extended = json.loads((build_snapshot(cat, params) / "manifest.json").read_text())
    assert extended["incremental_from"] == first["name"]
    assert extended["trained_rows"] == first["trained_rows"]
    with Catalog.open(path, "a") as cat:  # > 4x the rows: refitted on all of them
        cat.add_references([as_input(r) for r in refs[14:80]], MODEL)
        refit = json.loads((build_snapshot(cat, params) / "manifest.json").read_text())
    view = SearchView.open(path)
    assert refit["incremental_from"] is None
    assert refit["trained_rows"] == view.n_chunks > REFIT_GROWTH * first["trained_rows"]
    hits = TwoStageSearcher(view).search(_query_from(refs[60], 1, 4), np.arange(4) * 10.0)
    assert hits[0].reference_id == refs[60].id
    view.close()


def test_index_and_searcher_defaults_are_the_settings() -> None:
    """One set of defaults: the library's constructors and settings.catalog agree."""
    import inspect

    from streamcover.config import CatalogSettings

    s = CatalogSettings()
    assert IndexParams() == IndexParams.from_settings(s)
    d = {k: v.default for k, v in inspect.signature(TwoStageSearcher).parameters.items()}
    assert (d["top_k"], d["max_candidates"], d["refine"], d["fetch_factor"], d["screen"],
            d["screen_leaders"], d["centroid_candidates"], d["score_rule"]) == (
        s.top_k, s.max_candidates, s.stage1_refine, s.stage1_fetch_factor, s.stage2_screen,
        s.stage2_screen_leaders, s.centroid_candidates, s.score_rule)


def test_snapshot_swap_while_searching(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    """Queries keep running (and stay correct) while the index is rebuilt and swapped."""
    path = make_catalog(n=60)
    watcher = SnapshotWatcher(path, poll_seconds=0.05).start()
    s = TwoStageSearcher(watcher, top_k=20)
    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0]

    def searching() -> None:
        q = _query_from(refs[5], 0, 3)
        while not stop.is_set():
            try:
                hits = s.search(q, np.zeros(3))
                assert hits[0].reference_id == refs[5].id
                done[0] += 1
            except BaseException as exc:
                errors.append(exc)
                return

    t = threading.Thread(target=searching)
    t.start()
    try:
        first = watcher.current().snapshot_name
        with Catalog.open(path, "a") as cat:
            cat.add_references([as_input(r) for r in refs[60:90]], MODEL)
            cat.remove(refs[6].id)
        b = BackgroundBuilder(path, PARAMS, compact=True).start()
        assert b.join(120) is not None
        deadline = time.monotonic() + 30
        while watcher.current().snapshot_name == first and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
        watcher.stop()
    assert not errors, errors
    assert watcher.current().snapshot_name != first
    assert watcher.swaps >= 1 and done[0] > 0
    view = watcher.current()
    assert view.delta_keys.size == 0 and view.dead_in_snapshot == 0
    new_hits = TwoStageSearcher(view).search(_query_from(refs[80], 0, 3), np.zeros(3))
    assert new_hits[0].reference_id == refs[80].id


def test_stage1_keeps_k_distinct_references_per_chunk(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    view = SearchView.open(make_catalog())
    q = _query_from(refs[11], 1, 3)
    s = TwoStageSearcher(view, top_k=10, fetch_factor=4.0, max_candidates=1000)
    keys, sims = s.candidates(view, q)
    assert len(set(keys.tolist())) == len(keys)
    # Chunk candidates best first, then those reached by centroid only (NaN).
    reached = ~np.isnan(sims)
    n_reached = int(reached.sum())
    assert n_reached and reached[:n_reached].all()
    assert np.all(np.diff(sims[reached]) <= 0)
    # Each chunk's 10 nearest distinct references are all candidates; with plain chunk
    # neighbours (fetch = K) the same chunk names fewer distinct references.
    rows = view.stage1(q, s.fetch)
    for r in range(3):
        ok = rows.ref_keys[r] >= 0
        _, first = np.unique(rows.ref_keys[r][ok], return_index=True)
        nearest = rows.ref_keys[r][ok][np.sort(first)[:10]]
        assert len(nearest) == 10 and set(nearest.tolist()) <= set(keys.tolist())
    plain = view.stage1(q, 10)
    assert min(len(np.unique(plain.ref_keys[r])) for r in range(3)) < 10


@pytest.mark.parametrize("rule", ["length_weighted", "symmetric", "shorter_first"])
def test_stage2_scores_equal_reference_maxmean(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef], rule: str
) -> None:
    """The float16 screen plus float32 re-score gives the score the model defines under
    either rule, including references shorter than the query."""
    import torch

    from streamcover.model.maxmean import set_score

    view = SearchView.open(make_catalog())
    s = TwoStageSearcher(view, score_rule=rule)  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    q = _query_from(refs[5], 0, 8)
    keys = view.layout.keys[rng.choice(view.layout.keys.size, 60, replace=False)]
    short = [k for k in keys if view.layout.n_chunks[k] < 8]
    assert short, "the synthetic catalog has references shorter than the query"
    screened = s.rerank(view, q, keys, exact_top=0)
    exact = s.rerank(view, q, keys, exact_top=keys.size)
    want = np.array([
        float(set_score(torch.from_numpy(q),
                        torch.from_numpy(view.ref_vectors(int(k)).astype(np.float32)),
                        rule, normalized=True))  # type: ignore[arg-type]
        for k in keys
    ])
    np.testing.assert_allclose(exact, want, atol=2e-6)
    np.testing.assert_allclose(screened, want, atol=1e-3)
    # Blocks smaller than one reference still give the same scores.
    np.testing.assert_allclose(s.rerank(view, q, keys, block_rows=5, exact_top=keys.size), exact,
                               atol=1e-7)
    with pytest.raises(ValueError, match="score rule"):
        TwoStageSearcher(view, score_rule="longest_first")  # type: ignore[arg-type]


def test_stage1_memo_searches_only_new_chunks(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    path = make_catalog(n=60)
    watcher = SnapshotWatcher(path, poll_seconds=60)
    s = TwoStageSearcher(watcher, top_k=20)
    memo = Stage1Memo()
    target = refs[7]
    q = _query_from(target, 0, 6)
    starts = np.arange(6) * 10.0
    calls: list[int] = []
    view = watcher.current()
    real = view.stage1

    def counting(queries: np.ndarray, k: int, refine: int = 1, exact: bool = True):  # type: ignore[no-untyped-def]
        calls.append(queries.shape[0])
        return real(queries, k, refine, exact)

    view.stage1 = counting  # type: ignore[method-assign]
    for n in range(1, 7):
        hits = s.search(q[:n], starts[:n], chunk_ids=list(range(n)), memo=memo)
        plain = s.search(q[:n], starts[:n])
        assert [h.reference_id for h in hits] == [h.reference_id for h in plain]
        assert [h.score for h in hits] == [h.score for h in plain]
    memo_calls = calls[0::2]
    assert memo_calls == [1, 1, 1, 1, 1, 1]
    # A sliding horizon: chunks that left the query are forgotten.
    s.search(q[3:], starts[3:], chunk_ids=[3, 4, 5], memo=memo)
    assert len(memo) == 3 and calls[-1] == 6
    # A new view (the catalog changed) invalidates the memo.
    with Catalog.open(path, "a") as cat:
        cat.add_references([as_input(refs[100])], MODEL)
    assert watcher.poll()
    hits = s.search(q[3:], starts[3:], chunk_ids=[3, 4, 5], memo=memo)
    assert hits[0].reference_id == target.id and len(memo) == 3
    with pytest.raises(ValueError, match="chunk ids"):
        s.search(q[:2], starts[:2], chunk_ids=[0], memo=memo)


def test_open_applies_the_catalog_settings_and_thread_cap(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    """`TwoStageSearcher.open` is how the monitor and `identify` search: it takes the
    searcher's knobs from the settings and caps faiss at `search_threads`."""
    import faiss

    from streamcover.config import CatalogSettings
    from streamcover.device import configure_search_threads, physical_cores

    path = make_catalog(n=40)
    settings = CatalogSettings(path=path, top_k=20, centroid_candidates=7, score_rule="symmetric",
                               stage2_screen_leaders=9, search_threads=1)
    configure_search_threads(0)
    try:
        s = TwoStageSearcher.open(path, settings)
        assert faiss.omp_get_max_threads() == 1 or physical_cores() == 1
        assert (s.top_k, s.centroid_candidates, s.score_rule, s.screen_leaders) == (
            20, 7, "symmetric", 9)
        hits = s.search(_query_from(refs[12], 0, 3), np.arange(3) * 10.0, top_n=3)
        assert hits[0].reference_id == refs[12].id
        s.close()
    finally:
        configure_search_threads(0)
