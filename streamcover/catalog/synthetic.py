"""Synthetic chunk embeddings with the structure of real ones, for tests and benchmarks.

Uniform random vectors make nearest-neighbour search look easier and harder than
it is (no clusters, no near-duplicates). Here, each *work* is a random walk on the
unit sphere (consecutive 20 s chunks with a 10 s hop overlap, so neighbours in time
are similar), started near one of a few *genre* centres (so unrelated works
crowd each other). Each catalogued *version* of a work is that walk plus noise and
a random crop, and a query is a further, unseen version's run of consecutive chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class SyntheticSpec:
    dim: int = 512
    n_genres: int = 32
    genre_spread: float = 1.2  # larger = works less clustered around their genre centre
    step: float = 0.6  # random-walk step between consecutive chunks (overlap similarity)
    version_noise: float = 0.8  # per-version deviation from the work's walk
    versions_per_work: int = 2
    min_chunks: int = 8
    max_chunks: int = 40
    hop_s: float = 10.0
    seed: int = 0


@dataclass(frozen=True)
class SyntheticRef:
    id: str
    work: int
    vectors: np.ndarray  # [N, D] float32 unit rows
    starts: np.ndarray  # [N] seconds
    offset: int  # index of the first chunk in the work's walk


class SyntheticCorpus:
    """Deterministic generator of works, catalogued versions and queries."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        self._genres = _unit(rng.standard_normal((spec.n_genres, spec.dim)))

    def _work_walk(self, work: int) -> np.ndarray:
        s = self.spec
        rng = np.random.default_rng((s.seed, 1, work))
        length = s.max_chunks + 8
        genre = self._genres[work % s.n_genres]
        start = _unit(genre + s.genre_spread * rng.standard_normal(s.dim) / np.sqrt(s.dim))
        steps = s.step * rng.standard_normal((length, s.dim)) / np.sqrt(s.dim)
        walk = np.empty((length, s.dim), np.float32)
        v = start
        for t in range(length):
            v = _unit(v + steps[t])
            walk[t] = v
        return walk

    def version(self, work: int, version: int, n_chunks: int | None = None) -> SyntheticRef:
        s = self.spec
        rng = np.random.default_rng((s.seed, 2, work, version))
        walk = self._work_walk(work)
        n = n_chunks or int(rng.integers(s.min_chunks, s.max_chunks + 1))
        off = int(rng.integers(0, walk.shape[0] - n + 1))
        noise = s.version_noise * rng.standard_normal((n, s.dim)) / np.sqrt(s.dim)
        vecs = _unit(walk[off : off + n] + noise)
        starts = np.arange(n, dtype=np.float64) * s.hop_s
        return SyntheticRef(f"w{work:07d}-v{version}", work, vecs, starts, off)

    def references(self, n_works: int) -> Iterator[SyntheticRef]:
        """The catalogued versions: ``versions_per_work`` per work."""
        for w in range(n_works):
            for v in range(self.spec.versions_per_work):
                yield self.version(w, v)

    def query(self, work: int, n_chunks: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """An unseen version (version id 1000+seed) of ``work``: M consecutive chunks."""
        ref = self.version(work, 1000 + seed, n_chunks=n_chunks)
        return ref.vectors, ref.starts
