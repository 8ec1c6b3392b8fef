"""Evaluation protocols over chunk embeddings, scored with MaxMean as retrieval does.

- Full length (MIREX): every recording queries all the others.
- ByteCover3 short queries: clips of 6..60 s cut from each query recording are
  matched against the full-length references; the query's own recording is excluded.

A recording is a set of chunk vectors (L2-normalised); recording similarity is the
retrieval score of ``streamcover.model.maxmean`` (both MaxMean directions combined by a
score rule, length-weighted by default). A model that gives one vector per recording (the 2DFTM
baseline) is the special case of sets of size one (cosine similarity under either rule).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from streamcover.data.tracks import TrackSet
from streamcover.eval.metrics import RetrievalMetrics, retrieval_metrics
from streamcover.model.maxmean import ScoreRule, combine_directions

SHORT_QUERY_SECONDS: tuple[float, ...] = (6, 10, 15, 20, 25, 30, 40, 50, 60)

# features [bins, T] -> vectors [n, D] (L2-normalised); n may be 0 for too-short input.
SetEmbedder = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


@dataclass
class ChunkSets:
    """Vectors of many recordings, flattened: ``owner[i]`` is the recording of row i."""

    vectors: np.ndarray  # float32 [N, D]
    owner: np.ndarray  # int64 [N]
    n_sets: int

    @classmethod
    def from_list(cls, sets: Sequence[np.ndarray]) -> ChunkSets:
        dims = {s.shape[1] for s in sets if len(s)}
        if len(dims) > 1:
            raise ValueError(f"ChunkSets: vectors of different widths {sorted(dims)}")
        dim = dims.pop() if dims else 1
        nonempty = [s for s in sets if len(s)]
        vectors = (np.concatenate(nonempty, axis=0).astype(np.float32) if nonempty
                   else np.zeros((0, dim), np.float32))
        owner = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
        return cls(vectors=vectors, owner=owner.astype(np.int64), n_sets=len(sets))

    @property
    def lengths(self) -> np.ndarray:
        return np.bincount(self.owner, minlength=self.n_sets)


def maxmean_matrix(queries: ChunkSets, refs: ChunkSets, block_rows: int = 4096,
                   rule: ScoreRule = "length_weighted") -> np.ndarray:
    """Retrieval score of every query set against every reference set -> [Q, R].

    Both MaxMean directions, combined by ``rule``. Empty sets score 0 against everything.
    """
    import torch

    rv = torch.from_numpy(refs.vectors)
    r_owner = torch.from_numpy(refs.owner)
    r_len = torch.from_numpy(refs.lengths).double()
    out = np.zeros((queries.n_sets, refs.n_sets), dtype=np.float32)
    if len(rv) == 0 or len(queries.vectors) == 0:
        return out
    q_len_all = queries.lengths
    # Blocks of whole query sets of about block_rows chunks.
    bounds = [0]
    acc = 0
    for q in range(queries.n_sets):
        acc += int(q_len_all[q])
        if acc >= block_rows:
            bounds.append(q + 1)
            acc = 0
    if bounds[-1] != queries.n_sets:
        bounds.append(queries.n_sets)
    q_starts = np.concatenate([[0], np.cumsum(q_len_all)])
    with torch.no_grad():
        for lo, hi in itertools.pairwise(bounds):
            rows = slice(int(q_starts[lo]), int(q_starts[hi]))
            qv = torch.from_numpy(queries.vectors[rows])
            if len(qv) == 0:
                continue
            q_owner = torch.from_numpy(queries.owner[rows] - lo)
            nq = hi - lo
            s = qv @ rv.t()  # [Mq, Nr]
            # Query first: each query chunk's best chunk in each reference, mean over query chunks.
            best_in_ref = torch.full((len(qv), refs.n_sets), -2.0).scatter_reduce_(
                1, r_owner.expand(len(qv), -1), s, "amax", include_self=True)
            q_first = torch.zeros((nq, refs.n_sets), dtype=torch.float64).index_add_(
                0, q_owner, best_in_ref.double())
            q_len = torch.bincount(q_owner, minlength=nq).double()
            q_first /= q_len.clamp(min=1)[:, None]
            # Reference first: each reference chunk's best query chunk, mean over ref chunks.
            best_in_query = torch.full((nq, len(rv)), -2.0).scatter_reduce_(
                0, q_owner[:, None].expand(-1, len(rv)), s, "amax", include_self=True)
            r_first = torch.zeros((nq, refs.n_sets), dtype=torch.float64).index_add_(
                1, r_owner, best_in_query.double())
            r_first /= r_len.clamp(min=1)[None, :]
            sim = combine_directions(q_first, r_first, q_len[:, None], r_len[None, :], rule)
            empty = (q_len[:, None] == 0) | (r_len[None, :] == 0)
            out[lo:hi] = sim.masked_fill(empty, 0.0).float().numpy()
    return out


def full_length(sets: ChunkSets, works: np.ndarray,
                rule: ScoreRule = "length_weighted") -> tuple[RetrievalMetrics, np.ndarray]:
    """Every recording queries all the others (MIREX protocol)."""
    works = np.asarray(works)
    sim = maxmean_matrix(sets, sets, rule=rule)
    relevant = works[:, None] == works[None, :]
    exclude = np.eye(len(works), dtype=bool)
    return retrieval_metrics(sim, relevant, exclude), sim


def cut_query_clips(tracks: TrackSet, seconds: float, seed: int) -> list[np.ndarray]:
    """One clip of ``seconds`` per recording, at a seeded random offset (whole track if shorter)."""
    frames = max(1, round(seconds * tracks.frames_per_second))
    rng = np.random.default_rng([seed, round(seconds * 1000)])
    clips = []
    for i in range(len(tracks)):
        n = tracks.n_frames(i)
        start = int(rng.integers(0, n - frames + 1)) if n > frames else 0
        clips.append(tracks.feature(i, start, start + frames))
    return clips


def short_queries(embed_sets: SetEmbedder, tracks: TrackSet, refs: ChunkSets,
                  seconds: Sequence[float] = SHORT_QUERY_SECONDS,
                  seed: int = 0, rule: ScoreRule = "length_weighted") -> dict[float, RetrievalMetrics]:
    """ByteCover3 protocol: clips of each length vs full-length refs, own recording excluded."""
    works = np.asarray(tracks.works)
    relevant = works[:, None] == works[None, :]
    exclude = np.eye(len(works), dtype=bool)
    out: dict[float, RetrievalMetrics] = {}
    for sec in seconds:
        clips = cut_query_clips(tracks, sec, seed)
        q = ChunkSets.from_list(embed_sets(clips))
        sim = maxmean_matrix(q, refs, rule=rule)
        out[float(sec)] = retrieval_metrics(sim, relevant, exclude)
    return out
