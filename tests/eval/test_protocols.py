from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from streamcover.data.tracks import TrackSet
from streamcover.eval.protocols import ChunkSets, full_length, maxmean_matrix, short_queries
from streamcover.model.maxmean import maxmean, set_score


def _unit(rng: np.random.Generator, n: int, d: int = 6) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("rule", ["length_weighted", "symmetric", "shorter_first"])
def test_maxmean_matrix_matches_the_pairwise_score(rule: str) -> None:
    rng = np.random.default_rng(0)
    sets = [_unit(rng, n) for n in (1, 3, 5, 2, 7)]
    queries = [_unit(rng, n) for n in (2, 6, 1)]
    got = maxmean_matrix(ChunkSets.from_list(queries), ChunkSets.from_list(sets), block_rows=3,
                         rule=rule)  # type: ignore[arg-type]
    for i, q in enumerate(queries):
        for j, r in enumerate(sets):
            want = set_score(torch.from_numpy(q), torch.from_numpy(r), rule,  # type: ignore[arg-type]
                             normalized=True).item()
            assert got[i, j] == pytest.approx(want, abs=1e-5), (i, j)
            if rule == "shorter_first":  # ByteCover3's MaxMean, shorter set first
                paper = maxmean(torch.from_numpy(q), torch.from_numpy(r), normalized=True).item()
                assert got[i, j] == pytest.approx(paper, abs=1e-5), (i, j)
            else:
                sims = q @ r.T
                qf, rf = sims.max(axis=1).mean(), sims.max(axis=0).mean()
                want = ((qf + rf) / 2 if rule == "symmetric"  # weighted by the other's length
                        else (len(r) * qf + len(q) * rf) / (len(q) + len(r)))
                assert got[i, j] == pytest.approx(float(want), abs=1e-5), (i, j)


def test_empty_sets_score_zero() -> None:
    rng = np.random.default_rng(1)
    q = ChunkSets.from_list([np.zeros((0, 6), np.float32), _unit(rng, 2)])
    r = ChunkSets.from_list([_unit(rng, 3)])
    sim = maxmean_matrix(q, r)
    assert sim[0, 0] == 0.0 and sim[1, 0] != 0.0


def _tracks(n_works: int, versions: int) -> TrackSet:
    """Recording i is a constant matrix with value i/100 in bin 0, so any clip names it."""
    n = n_works * versions
    feats = [np.full((12, 200), 0.0, np.float32) for _ in range(n)]
    for i, f in enumerate(feats):
        f[0] = i / 100
    return TrackSet(features=feats, works=np.repeat(np.arange(n_works), versions),
                    track_ids=[str(i) for i in range(n)], frames_per_second=2.0)


def _one_hot_embedder(tracks: TrackSet, by_work: bool):  # type: ignore[no-untyped-def]
    def embed(feats: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for f in feats:
            rec = round(float(f[0, 0]) * 100)
            key = int(tracks.works[rec]) if by_work else rec
            v = np.zeros((1, len(tracks)), np.float32)
            v[0, key] = 1.0
            out.append(v)
        return out

    return embed


def test_full_length_perfect_when_versions_share_vectors() -> None:
    rng = np.random.default_rng(3)
    works = np.repeat(np.arange(4), 3)
    centres = _unit(rng, 4)
    sets = [centres[w] + 0.01 * _unit(rng, 2) for w in works]
    sets = [s / np.linalg.norm(s, axis=1, keepdims=True) for s in sets]
    m, sim = full_length(ChunkSets.from_list(sets), works)
    assert m.map == pytest.approx(1.0) and m.mr1 == pytest.approx(1.0)
    assert sim.shape == (12, 12)


@pytest.mark.parametrize("by_work", [True, False])
def test_short_queries_exclude_the_query_recording(by_work: bool) -> None:
    tracks = _tracks(3, 2)
    embed = _one_hot_embedder(tracks, by_work)
    refs = ChunkSets.from_list(embed([tracks.feature(i) for i in range(len(tracks))]))
    res = short_queries(embed, tracks, refs, seconds=(10.0, 30.0), seed=0)
    assert set(res) == {10.0, 30.0}
    for m in res.values():
        assert m.n_queries == 6
        if by_work:
            assert m.map == pytest.approx(1.0)  # the other version is found
        else:
            # only the clip's own recording matches it, and it is excluded: chance level
            assert m.map < 0.9


def test_eval_and_data_do_not_import_train() -> None:
    """Imports go one way, train -> eval -> data: evaluation never loads the trainer."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import streamcover.data.shs, streamcover.data.tracks, streamcover.data.chunker\n"
        "import streamcover.eval.baselines, streamcover.eval.embedders\n"
        "import streamcover.eval.metrics, streamcover.eval.protocols, streamcover.eval.report\n"
        "bad = sorted(m for m in sys.modules if m.startswith('streamcover.train'))\n"
        "print(bad)\n"
        "raise SystemExit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_train_paths_still_reexport_the_data_types() -> None:
    from streamcover.data import shs as data_shs
    from streamcover.train import shs as train_shs
    from streamcover.train.tracks import TrackSet as TrainTrackSet

    assert TrainTrackSet is TrackSet
    assert train_shs.load_shs is data_shs.load_shs and train_shs.ShsData is data_shs.ShsData
