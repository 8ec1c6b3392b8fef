"""Synthetic chunk embeddings with the structure of real ones, for tests and benchmarks.

Uniform random vectors make nearest-neighbour search look easier and harder than
it is (no clusters, no near-duplicates). Here, each *work* is a random walk on the
unit sphere (consecutive 20 s chunks with a 10 s hop overlap, so neighbours in time
are similar), started near one of a few *genre* centres (so unrelated works
crowd each other). Each catalogued *version* of a work is that walk plus noise and
a random crop, and a query is a further, unseen version's run of consecutive chunks.

``FittedCorpus`` instead draws references from statistics fitted to a real catalog
(``fit_reference_stats``): the benchmark grows a catalog of real embeddings to sizes the
real data cannot reach with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
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


@dataclass(frozen=True)
class FittedStats:
    """Second-order statistics of a real catalog's chunk embeddings.

    A reference's chunks are modelled as its mean plus an AR(1) residual: the reference
    means spread with covariance ``between``, the residuals with covariance ``within``
    and lag-1 correlation ``rho`` (consecutive chunks overlap in time). Both covariances
    are kept as factors ``F`` with ``F @ F.T = cov``.
    """

    mean: np.ndarray  # [D]
    between: np.ndarray  # [D, D]
    within: np.ndarray  # [D, D]
    rho: float
    lengths: np.ndarray  # chunk counts of the real references, sampled from


def _factor(cov: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(cov.astype(np.float64))
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))).astype(np.float32)


def fit_reference_stats(refs: Iterable[np.ndarray]) -> FittedStats:
    """Fit :class:`FittedStats` to references given as ``[n_chunks, D]`` arrays."""
    means: list[np.ndarray] = []
    lengths: list[int] = []
    w_sum: np.ndarray | None = None
    n_res = 0
    lag_num = lag_den = 0.0
    for v in refs:
        v = np.asarray(v, dtype=np.float32)
        if v.ndim != 2 or len(v) == 0:
            continue
        m = v.mean(0)
        r = v - m
        means.append(m)
        lengths.append(len(v))
        w_sum = r.T @ r if w_sum is None else w_sum + r.T @ r
        n_res += len(v) - 1  # one degree of freedom goes to the mean
        if len(v) > 1:
            lag_num += float(np.sum(r[1:] * r[:-1]))
            lag_den += float(np.sum(r[:-1] * r[:-1]))
    if len(means) < 2 or w_sum is None:
        raise ValueError("fit_reference_stats needs at least two non-empty references")
    mu = np.stack(means)
    centre = mu.mean(0)
    between = np.cov(mu, rowvar=False)
    within = w_sum / max(n_res, 1)
    rho = float(np.clip(lag_num / lag_den, 0.0, 0.99)) if lag_den > 0 else 0.0
    return FittedStats(centre.astype(np.float32), _factor(between), _factor(within), rho,
                       np.asarray(lengths, dtype=np.int64))


class FittedCorpus:
    """Distractor references drawn from :class:`FittedStats`: the spectrum, spread and
    temporal smoothness of a real catalog at any size, for benchmarks beyond the real
    data. They form no cover groups; they stand for the unrelated bulk of a catalog."""

    def __init__(self, stats: FittedStats, seed: int = 0) -> None:
        self.stats = stats
        self.seed = seed

    def batch(self, first: int, count: int) -> list[SyntheticRef]:
        """References ``first .. first+count-1`` (deterministic per index range)."""
        st = self.stats
        rng = np.random.default_rng((self.seed, 3, first, count))
        dim = st.mean.shape[0]
        lens = rng.choice(st.lengths, size=count)
        top = int(lens.max())
        centres = st.mean + rng.standard_normal((count, dim)).astype(np.float32) @ st.between.T
        innov = np.sqrt(1.0 - st.rho**2)
        r = rng.standard_normal((count, dim)).astype(np.float32) @ st.within.T
        out = np.empty((count, top, dim), np.float32)
        for t in range(top):
            if t:
                e = rng.standard_normal((count, dim)).astype(np.float32) @ st.within.T
                r = st.rho * r + innov * e
            out[:, t] = centres + r
        refs = []
        for i in range(count):
            n = int(lens[i])
            refs.append(SyntheticRef(f"fitted-{first + i:08d}", -1, _unit(out[i, :n]),
                                     np.arange(n, dtype=np.float64) * 10.0, 0))
        return refs


def similarity_profile(refs: Sequence[np.ndarray], pairs: int = 20000,
                       seed: int = 0) -> dict[str, float]:
    """Cosine statistics that say whether two catalogs look alike to a nearest-neighbour
    search: between chunks of different references, between consecutive chunks of one,
    and the share of variance in the top 10 / 50 principal directions."""
    rng = np.random.default_rng(seed)
    sets = [np.asarray(r, dtype=np.float32) for r in refs if len(r)]
    if len(sets) < 2:
        raise ValueError(f"similarity_profile needs at least 2 non-empty references, got {len(sets)}")
    a = rng.integers(0, len(sets), pairs)
    b = rng.integers(0, len(sets), pairs)
    keep = a != b
    x = np.stack([sets[i][rng.integers(0, len(sets[i]))] for i in a[keep]])
    y = np.stack([sets[i][rng.integers(0, len(sets[i]))] for i in b[keep]])
    lag = [float(np.mean(np.sum(s[1:] * s[:-1], axis=1))) for s in sets if len(s) > 1]
    sample = np.concatenate([sets[i] for i in rng.integers(0, len(sets), 400)])
    sv = np.linalg.svd(sample - sample.mean(0), compute_uv=False) ** 2
    return {
        "cos_unrelated_mean": float(np.mean(np.sum(x * y, axis=1))),
        "cos_unrelated_p99": float(np.percentile(np.sum(x * y, axis=1), 99)),
        "cos_consecutive_mean": float(np.mean(lag)),
        "var_top10": float(sv[:10].sum() / sv.sum()),
        "var_top50": float(sv[:50].sum() / sv.sum()),
    }
