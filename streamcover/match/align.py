"""Stage 3: local alignment of two HPCP sequences (Serra's Qmax), to verify a MaxMean match.

MaxMean compares bags of 20 s chunk embeddings and ignores their order; a real cover or
re-upload also plays the same chroma progression in the same order. This module measures
that order directly, following Serra, Serra & Andrzejak (2009):

1. **Transposition.** The optimal transposition index (OTI): the circular shift of the
   reference's global chroma profile that best correlates with the query's. With
   ``transpositions=k`` the k best-correlating shifts are each tried and the best alignment
   kept (12 = every shift).
2. **State-space embedding.** Each frame is stacked with the next ``dim - 1`` frames
   ``delay`` apart, so a match is a short melody/harmony fragment, not a single chord.
3. **Binary cross-recurrence plot.** ``R[i, j] = 1`` when reference frame j is among the
   ``kappa`` fraction of nearest reference frames of query frame i *and* i is among the
   ``kappa`` nearest query frames of j (mutual nearest neighbours, exact counts, so ties and
   constant inputs cannot fill the plot). Silent frames (all-zero chroma) never recur.
4. **Qmax.** A Smith–Waterman recursion over R with diagonal and knight moves (so tempo
   may drift by up to 2x locally), +1 per recurrent cell and a penalty ``gap_onset`` to leave
   a run of recurrences, ``gap_extend`` per further non-recurrent cell. Qmax is the best
   local path's score; it never exceeds the shorter embedded length.

Inputs and conventions (what the catalog and the front end hand over):

- ``query``: the front end's HPCP, ``[12, T1]`` (bins first), float in 0..1 (float32
  preferred); uint8 0..255 is also accepted and scaled by 1/255.
- ``reference``: the catalog's stored HPCP, ``[T2, 12]`` (time first), uint8 0..255; float
  in 0..1 is also accepted.
- Both at :data:`FRAMES_PER_SECOND` (2.1533 frames/s; 44100 / 1024 / 20), bin 0 = A.
- Lengths are capped (``max_query_frames``, ``max_reference_frames``; the first frames are
  kept) so the cost of one pair is bounded: O(T1 · T2 · transpositions).

The score (``Alignment.score``) is Qmax divided by the shorter embedded length, in [0, 1]:
1 means the shorter sequence aligns end to end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

FRAMES_PER_SECOND = 44_100 / 1024 / 20
N_BINS = 12
# Measured defaults (docs/results/2026-12-03-stage3.md).
DEFAULT_DIM = 9
DEFAULT_DELAY = 1
DEFAULT_KAPPA = 0.1
DEFAULT_GAP_ONSET = 5.0
DEFAULT_GAP_EXTEND = 0.5
DEFAULT_TRANSPOSITIONS = 1
# About 8 min of query and 12 min of reference at 2.15 frames/s.
DEFAULT_MAX_QUERY_FRAMES = 1024
DEFAULT_MAX_REFERENCE_FRAMES = 1536
_SILENT = 1e-6


@dataclass(frozen=True)
class Alignment:
    """The best local alignment of a query against one reference.

    ``score`` = ``qmax`` / min(embedded lengths), in [0, 1] (0 when nothing aligns or an
    input is too short to embed). Spans are ``(start, stop)`` frame ranges of the inputs
    as given (after the length cap), ``stop`` exclusive; ``(0, 0)`` when nothing aligns.
    ``shift``: the reference was rolled by this many bins (``np.roll(ref, shift, axis=1)``)
    to meet the query's key.
    """

    score: float
    qmax: float
    query_span: tuple[int, int]
    reference_span: tuple[int, int]
    shift: int
    query_frames: int
    reference_frames: int


def _as_time_major(x: np.ndarray, bins_first: bool, name: str) -> np.ndarray:
    """float32 [T, 12] in 0..1 from uint8 0..255 or float 0..1 input; clear errors otherwise."""
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[0 if bins_first else 1] != N_BINS:
        want = "[12, T]" if bins_first else "[T, 12]"
        raise ValueError(f"{name} must be HPCP {want}, got shape {a.shape}")
    if a.dtype == np.uint8:
        out = a.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(a.dtype, np.floating):
        out = a.astype(np.float32)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{name} has non-finite values")
    else:
        raise ValueError(f"{name} must be uint8 or float, got {a.dtype}")
    return np.ascontiguousarray(out.T if bins_first else out)


def oti_shifts(query: np.ndarray, reference: np.ndarray, k: int = 1) -> np.ndarray:
    """The ``k`` circular shifts of ``reference`` [T2, 12] whose global chroma profile best
    correlates with that of ``query`` [T1, 12], best first (the first one is the OTI)."""
    gq = query.sum(axis=0)
    gr = reference.sum(axis=0)
    gq = gq / max(float(gq.max()), _SILENT)
    gr = gr / max(float(gr.max()), _SILENT)
    corr = np.array([float(gq @ np.roll(gr, s)) for s in range(N_BINS)])
    return np.argsort(-corr, kind="stable")[: max(1, min(k, N_BINS))]


def embed_frames(x: np.ndarray, dim: int, delay: int) -> tuple[np.ndarray, np.ndarray]:
    """State-space embedding of [T, 12] -> ([T - (dim-1)·delay, 12·dim], voiced mask).

    An embedded frame is silent (mask False) when any of its frames is all zero.
    """
    n = x.shape[0] - (dim - 1) * delay
    if n <= 0:
        return np.zeros((0, N_BINS * dim), np.float32), np.zeros(0, bool)
    parts = [x[k * delay : k * delay + n] for k in range(dim)]
    voiced = np.logical_and.reduce([p.max(axis=1) > _SILENT for p in parts])
    return np.ascontiguousarray(np.concatenate(parts, axis=1)), voiced


def _nearest_mask(d: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``d``, True at exactly its ``k`` smallest entries (ties: lowest index)."""
    mask = d <= np.partition(d, k - 1, axis=1)[:, k - 1 : k]
    tied = np.flatnonzero(mask.sum(axis=1) > k)  # rare: equal distances (silence, copies)
    if len(tied):
        exact = np.zeros((len(tied), d.shape[1]), bool)
        idx = np.argsort(d[tied], axis=1, kind="stable")[:, :k]
        np.put_along_axis(exact, idx, True, axis=1)
        mask[tied] = exact
    return mask


def _mutual_knn(q: np.ndarray, q_voiced: np.ndarray, r: np.ndarray, r_voiced: np.ndarray,
                kappa: float) -> np.ndarray:
    """Binary cross-recurrence plot [N1, N2] (uint8) of mutual kappa-nearest neighbours."""
    n1, n2 = len(q), len(r)
    d = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * (q @ r.T)
    k_row = max(1, min(n2, round(kappa * n2)))
    k_col = max(1, min(n1, round(kappa * n1)))
    rows = _nearest_mask(d, k_row)
    cols = _nearest_mask(d.T, k_col).T
    rec = rows & cols & q_voiced[:, None] & r_voiced[None, :]
    return rec.astype(np.uint8)


@numba.njit(cache=True, nogil=True)
def _qmax_kernel(rec: np.ndarray, gap_onset: float, gap_extend: float
                 ) -> tuple[float, int, int, int, int]:  # pragma: no cover - compiled
    """Qmax over a binary plot; returns (qmax, start_i, start_j, end_i, end_j) inclusive."""
    n1, n2 = rec.shape
    q = np.zeros((3, n2 + 2), np.float32)
    si = np.zeros((3, n2 + 2), np.int32)
    sj = np.zeros((3, n2 + 2), np.int32)
    best, b_si, b_sj, b_ei, b_ej = 0.0, 0, 0, -1, -1
    for i in range(n1):
        cur, p1, p2 = (i + 2) % 3, (i + 1) % 3, i % 3
        for j in range(n2):
            jp = j + 2
            a, b, c = q[p1, jp - 1], q[p2, jp - 1], q[p1, jp - 2]
            if rec[i, j]:
                v, row, col = a, p1, jp - 1
                if b > v:
                    v, row, col = b, p2, jp - 1
                if c > v:
                    v, row, col = c, p1, jp - 2
                val = v + 1.0
                fresh = v <= 0.0
            else:
                ra = i >= 1 and j >= 1 and rec[i - 1, j - 1] != 0
                rb = i >= 2 and j >= 1 and rec[i - 2, j - 1] != 0
                rc = i >= 1 and j >= 2 and rec[i - 1, j - 2] != 0
                v, row, col = a - (gap_onset if ra else gap_extend), p1, jp - 1
                vb = b - (gap_onset if rb else gap_extend)
                vc = c - (gap_onset if rc else gap_extend)
                if vb > v:
                    v, row, col = vb, p2, jp - 1
                if vc > v:
                    v, row, col = vc, p1, jp - 2
                val = v if v > 0.0 else 0.0
                fresh = val <= 0.0
            q[cur, jp] = val
            if fresh:
                si[cur, jp], sj[cur, jp] = i, j
            else:
                si[cur, jp], sj[cur, jp] = si[row, col], sj[row, col]
            if val > best:
                best, b_si, b_sj, b_ei, b_ej = val, si[cur, jp], sj[cur, jp], i, j
    return best, b_si, b_sj, b_ei, b_ej


def qmax(rec: np.ndarray, gap_onset: float = DEFAULT_GAP_ONSET,
         gap_extend: float = DEFAULT_GAP_EXTEND) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """Qmax of a binary cross-recurrence plot [N1, N2] with the best path's first and last
    cells ``(i, j)``; ``(0, 0), (-1, -1)`` when no cell recurs."""
    r = np.ascontiguousarray(np.asarray(rec) != 0, dtype=np.uint8)
    if r.ndim != 2:
        raise ValueError(f"qmax needs a 2-D plot, got shape {r.shape}")
    if r.size == 0:
        return 0.0, (0, 0), (-1, -1)
    v, s_i, s_j, e_i, e_j = _qmax_kernel(r, float(gap_onset), float(gap_extend))
    return float(v), (int(s_i), int(s_j)), (int(e_i), int(e_j))


@dataclass(frozen=True)
class _Prepared:
    frames: np.ndarray  # [T, 12] float32 (after the cap)
    emb: np.ndarray
    voiced: np.ndarray


def _prepare(x: np.ndarray, bins_first: bool, name: str, cap: int, dim: int, delay: int
             ) -> _Prepared:
    frames = _as_time_major(x, bins_first, name)[:cap]
    emb, voiced = embed_frames(frames, dim, delay)
    return _Prepared(frames, emb, voiced)


def _check_params(dim: int, delay: int, kappa: float, transpositions: int) -> None:
    if dim < 1 or delay < 1:
        raise ValueError(f"dim and delay must be >= 1, got {dim}, {delay}")
    if not 0.0 < kappa <= 1.0:
        raise ValueError(f"kappa must lie in (0, 1], got {kappa}")
    if not 1 <= transpositions <= N_BINS:
        raise ValueError(f"transpositions must lie in 1..12, got {transpositions}")


def _align_prepared(q: _Prepared, reference: np.ndarray, *, dim: int, delay: int, kappa: float,
                    gap_onset: float, gap_extend: float, transpositions: int,
                    max_reference_frames: int) -> Alignment:
    ref = _as_time_major(reference, False, "reference")[:max_reference_frames]
    span = (dim - 1) * delay
    empty = Alignment(0.0, 0.0, (0, 0), (0, 0), 0, len(q.frames), len(ref))
    if len(q.emb) == 0 or len(ref) <= span:
        return empty
    best = empty
    r_emb, r_voiced = embed_frames(ref, dim, delay)
    blocks = r_emb.reshape(len(r_emb), dim, N_BINS)
    for shift in oti_shifts(q.frames, ref, transpositions):
        # Rolling each embedded frame's 12-bin blocks = embedding the rolled reference.
        rolled = np.ascontiguousarray(np.roll(blocks, int(shift), axis=2).reshape(r_emb.shape))
        rec = _mutual_knn(q.emb, q.voiced, rolled, r_voiced, kappa)
        value, (si, sj), (ei, ej) = qmax(rec, gap_onset, gap_extend)
        if value > best.qmax:
            best = Alignment(
                score=value / min(len(q.emb), len(rolled)), qmax=value,
                query_span=(si, ei + span + 1), reference_span=(sj, ej + span + 1),
                shift=int(shift), query_frames=len(q.frames), reference_frames=len(ref))
        elif best is empty:
            best = Alignment(0.0, 0.0, (0, 0), (0, 0), int(shift), len(q.frames), len(ref))
    return best


def align(query: np.ndarray, reference: np.ndarray, *, dim: int = DEFAULT_DIM,
          delay: int = DEFAULT_DELAY, kappa: float = DEFAULT_KAPPA,
          gap_onset: float = DEFAULT_GAP_ONSET, gap_extend: float = DEFAULT_GAP_EXTEND,
          transpositions: int = DEFAULT_TRANSPOSITIONS,
          max_query_frames: int = DEFAULT_MAX_QUERY_FRAMES,
          max_reference_frames: int = DEFAULT_MAX_REFERENCE_FRAMES) -> Alignment:
    """Qmax alignment of ``query`` [12, T1] (front-end layout) against ``reference`` [T2, 12]
    (catalog layout); see the module docstring for dtypes, frame rate and the score.

    Inputs too short to embed (fewer than ``(dim-1)·delay + 1`` frames) score 0; malformed
    inputs (wrong shape, dtype, non-finite values) raise ``ValueError``.
    """
    return align_candidates(query, [reference], dim=dim, delay=delay, kappa=kappa,
                            gap_onset=gap_onset, gap_extend=gap_extend,
                            transpositions=transpositions, max_query_frames=max_query_frames,
                            max_reference_frames=max_reference_frames)[0]


def align_candidates(query: np.ndarray, references: Sequence[np.ndarray], *,
                     dim: int = DEFAULT_DIM, delay: int = DEFAULT_DELAY,
                     kappa: float = DEFAULT_KAPPA, gap_onset: float = DEFAULT_GAP_ONSET,
                     gap_extend: float = DEFAULT_GAP_EXTEND,
                     transpositions: int = DEFAULT_TRANSPOSITIONS,
                     max_query_frames: int = DEFAULT_MAX_QUERY_FRAMES,
                     max_reference_frames: int = DEFAULT_MAX_REFERENCE_FRAMES
                     ) -> list[Alignment]:
    """Align one query [12, T1] against each candidate reference [T2_i, 12]: the searcher's
    stage-3 entry point. Same result as :func:`align` per pair; the query is prepared once.

    Cost is bounded: at most ``max_query_frames × max_reference_frames × transpositions``
    recursion cells per candidate (the first frames of longer inputs are used), so a caller
    bounds a window's cost by its number of candidates.
    """
    _check_params(dim, delay, kappa, transpositions)
    q = _prepare(query, True, "query", max_query_frames, dim, delay)
    return [_align_prepared(q, ref, dim=dim, delay=delay, kappa=kappa, gap_onset=gap_onset,
                            gap_extend=gap_extend, transpositions=transpositions,
                            max_reference_frames=max_reference_frames)
            for ref in references]


def scores(alignments: Sequence[Alignment]) -> np.ndarray:
    """The ``score`` of each alignment as float32 [n]."""
    return np.array([a.score for a in alignments], dtype=np.float32)


def sqrt_normalised(a: Alignment, dim: int = DEFAULT_DIM, delay: int = DEFAULT_DELAY) -> float:
    """Qmax / sqrt(shorter embedded length): an alternative normalisation, kept for study."""
    n = min(a.query_frames, a.reference_frames) - (dim - 1) * delay
    return a.qmax / math.sqrt(n) if n > 0 else 0.0
