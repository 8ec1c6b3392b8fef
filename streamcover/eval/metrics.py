"""Retrieval metrics of the MIREX cover-song protocol: mAP, P@10, MR1 (vectorised)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RetrievalMetrics:
    """Means over the queries that have at least one relevant item."""

    map: float
    p_at_10: float
    mr1: float
    n_queries: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def retrieval_metrics(sim: np.ndarray, relevant: np.ndarray, exclude: np.ndarray | None = None,
                      seed: int = 0) -> RetrievalMetrics:
    """Rank every row of ``sim`` [Q, R] (higher = closer) and score it against ``relevant``.

    ``exclude`` marks pairs left out of the ranking entirely (e.g. a query's own
    recording). Ties are broken by a fixed random order of the columns, so a model
    that scores everything equal gets chance-level figures, not the index order's.
    """
    sim = np.asarray(sim, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if sim.shape != relevant.shape or sim.ndim != 2:
        raise ValueError(f"sim {sim.shape} and relevant {relevant.shape} must be the same 2-D shape")
    if exclude is None:
        exclude = np.zeros_like(relevant)
    exclude = np.asarray(exclude, dtype=bool)
    if not np.all(np.isfinite(sim[~exclude])):
        raise ValueError("similarities must be finite")
    relevant = relevant & ~exclude
    n_rel = relevant.sum(1)
    rows = n_rel > 0
    if not rows.any():
        return RetrievalMetrics(float("nan"), float("nan"), float("nan"), 0)
    sim, relevant, exclude = sim[rows], relevant[rows], exclude[rows]
    n_rel = n_rel[rows]
    perm = np.random.default_rng(seed).permutation(sim.shape[1])
    scores = np.where(exclude, -np.inf, sim)[:, perm]
    order = np.argsort(-scores, axis=1, kind="stable")
    rel_sorted = np.take_along_axis(relevant[:, perm], order, axis=1)
    hits = np.cumsum(rel_sorted, axis=1)
    ranks = np.arange(1, sim.shape[1] + 1)
    ap = (rel_sorted * hits / ranks).sum(1) / n_rel
    p10 = rel_sorted[:, :10].sum(1) / 10.0
    first = rel_sorted.argmax(1) + 1
    return RetrievalMetrics(
        map=float(ap.mean()), p_at_10=float(p10.mean()), mr1=float(first.mean()),
        n_queries=int(rows.sum()),
    )
