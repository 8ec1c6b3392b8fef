"""MaxMean (ByteCover3): the set-to-set similarity between two sequences of chunk embeddings.

MaxMean(X, Y) = mean over rows x of X of max over rows y of Y of cos(x, y). It is not
symmetric, so ByteCover3 puts the shorter sequence first (on a tie, the query); the
training losses use that rule. Retrieval scores a query against a reference with a
:data:`ScoreRule` (:func:`combine_directions`): by default both directions weighted by
length, which ranked held-out SHS100K covers better than the shorter-first rule at every
query length we measured while scoring a short query as that rule does
(docs/training.md). Three forms:

- :func:`maxmean` for one pair;
- :func:`maxmean_padded` for one query against R padded references (retrieval stage 2),
  also returning the query-to-reference chunk alignment for match events;
- :func:`maxmean_matrix` for a batch against a batch (training, LAL), differentiable.

All take raw vectors and L2-normalise them unless ``normalized=True``.
"""

from __future__ import annotations

from typing import NamedTuple, TypeVar, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from streamcover.config import ScoreRule

_NEG = float("-inf")

# "length_weighted": both directions, each weighted by the length of the set it does not
#   start from: the shorter set's direction dominates as ByteCover3's rule wants, and sets
#   of similar length get both directions about equally instead of one picked by a chunk.
# "symmetric": the mean of MaxMean(query, ref) and MaxMean(ref, query).
# "shorter_first": ByteCover3's rule, MaxMean with the shorter set first.
SCORE_RULES: tuple[str, ...] = get_args(ScoreRule)

_Scores = TypeVar("_Scores", np.ndarray, Tensor)


def combine_directions(query_first: _Scores, ref_first: _Scores, query_len: _Scores,
                       ref_len: _Scores, rule: ScoreRule = "length_weighted") -> _Scores:
    """The retrieval score from both MaxMean directions (arrays or tensors that broadcast).

    ``query_first`` averages over the query's chunks (each one's best reference chunk);
    ``ref_first`` over the reference's. Every stage that ranks (catalog stage 2, exhaustive
    search, ``streamcover eval``) calls this, so they cannot disagree on the score.
    """
    if rule == "length_weighted":
        return (ref_len * query_first + query_len * ref_first) / (query_len + ref_len)
    if rule == "symmetric":
        return (query_first + ref_first) / 2
    if rule == "shorter_first":
        ref_shorter = ref_len < query_len
        return query_first + ref_shorter * (ref_first - query_first)
    raise ValueError(f"unknown score rule {rule!r}; expected one of {SCORE_RULES}")


def set_score(x: Tensor, y: Tensor, rule: ScoreRule = "length_weighted",
              normalized: bool = False) -> Tensor:
    """The retrieval score of query ``x [M, D]`` against reference ``y [L, D]`` (one pair;
    the definition the batched forms are tested against)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(f"set_score needs non-empty [M, D] and [L, D], got {list(x.shape)} "
                         f"and {list(y.shape)}")
    sims = _unit(x, normalized) @ _unit(y, normalized).T
    m, n = torch.tensor(float(len(x))), torch.tensor(float(len(y)))
    return combine_directions(sims.amax(dim=1).mean(), sims.amax(dim=0).mean(), m, n, rule)


class MaxMeanResult(NamedTuple):
    """scores [R]; best_ref_chunk [R, M] (index of each query chunk's best reference chunk);
    best_sim [R, M] (that chunk's cosine similarity)."""

    scores: Tensor
    best_ref_chunk: Tensor
    best_sim: Tensor


def _unit(x: Tensor, normalized: bool) -> Tensor:
    return x if normalized else F.normalize(x, dim=-1, eps=1e-12)


def maxmean(x: Tensor, y: Tensor, normalized: bool = False) -> Tensor:
    """MaxMean of two sequences ``x [M, D]`` and ``y [L, D]``; the shorter one goes first."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"maxmean needs [M, D] and [L, D], got {list(x.shape)} and {list(y.shape)}"
        )
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("maxmean of an empty sequence is undefined")
    if y.shape[0] < x.shape[0]:
        x, y = y, x
    sims = _unit(x, normalized) @ _unit(y, normalized).T
    return sims.amax(dim=1).mean()


def maxmean_padded(
    query: Tensor, refs: Tensor, ref_lengths: Tensor, normalized: bool = False
) -> MaxMeanResult:
    """One query ``[M, D]`` against references ``[R, L, D]`` padded to L, valid lengths ``[R]``.

    Each score uses the order rule (the shorter of query and reference first), so a
    reference shorter than the query is scored reference-to-query. The alignment is
    always query-to-reference: for each query chunk, its best valid reference chunk.
    Padding rows never change a score.
    """
    if query.dim() != 2 or refs.dim() != 3 or refs.shape[2] != query.shape[1]:
        raise ValueError(
            f"maxmean_padded needs query [M, D] and refs [R, L, D], "
            f"got {list(query.shape)} and {list(refs.shape)}"
        )
    m = query.shape[0]
    r, length = refs.shape[0], refs.shape[1]
    lengths = torch.as_tensor(ref_lengths, device=refs.device).long().reshape(-1)
    if lengths.shape[0] != r:
        raise ValueError(f"ref_lengths has {lengths.shape[0]} entries for {r} references")
    if m == 0:
        raise ValueError("maxmean_padded: empty query")
    if r == 0:
        empty = query.new_zeros((0, m))
        return MaxMeanResult(query.new_zeros((0,)), empty.long(), empty)
    if bool((lengths < 1).any()) or bool((lengths > length).any()):
        raise ValueError(f"ref_lengths must lie in [1, {length}], got {lengths.tolist()}")
    q = _unit(query, normalized)
    y = _unit(refs, normalized)
    sims = torch.einsum("md,rld->rml", q, y.to(q.dtype))  # [R, M, L]
    valid = torch.arange(length, device=refs.device)[None, :] < lengths[:, None]  # [R, L]
    masked = sims.masked_fill(~valid[:, None, :], _NEG)
    best_sim, best_idx = masked.max(dim=2)  # [R, M]: query -> reference
    q_first = best_sim.mean(dim=1)
    # Reference first: each valid reference chunk's best query chunk, averaged over valid rows.
    col_best = sims.amax(dim=1).masked_fill(~valid, 0.0)  # [R, L]
    r_first = col_best.sum(dim=1) / lengths.to(col_best.dtype)
    scores = torch.where(lengths < m, r_first, q_first)
    return MaxMeanResult(scores, best_idx, best_sim)


def maxmean_matrix(
    a: Tensor,
    a_mask: Tensor | None,
    b: Tensor,
    b_mask: Tensor | None,
    normalized: bool = False,
) -> Tensor:
    """Pairwise MaxMean ``[B, C]`` between padded sets ``a [B, M, D]`` and ``b [C, L, D]``.

    Masks are boolean ``[B, M]`` / ``[C, L]`` (True = a real chunk; None = all real), each
    row needing at least one real chunk. For each pair the shorter set goes first (ties:
    ``a`` first). Differentiable in both operands, e.g. for LAL logits against proxies.
    """
    if a.dim() != 3 or b.dim() != 3 or a.shape[2] != b.shape[2]:
        raise ValueError(
            f"maxmean_matrix needs [B, M, D] and [C, L, D], got {list(a.shape)} and {list(b.shape)}"
        )
    bsz, m, _ = a.shape
    c, length, _ = b.shape
    am = torch.ones(bsz, m, dtype=torch.bool, device=a.device) if a_mask is None else a_mask.bool()
    bm = (
        torch.ones(c, length, dtype=torch.bool, device=b.device)
        if b_mask is None
        else b_mask.bool()
    )
    if am.shape != (bsz, m) or bm.shape != (c, length):
        raise ValueError(
            f"maxmean_matrix masks must be [{bsz}, {m}] and [{c}, {length}], "
            f"got {list(am.shape)} and {list(bm.shape)}"
        )
    na = am.sum(dim=1)
    nb = bm.sum(dim=1)
    if bool((na < 1).any()) or bool((nb < 1).any()):
        raise ValueError("maxmean_matrix: every set needs at least one unmasked chunk")
    x = _unit(a, normalized)
    y = _unit(b, normalized).to(x.dtype)
    sims = torch.einsum("bmd,cld->bcml", x, y)  # [B, C, M, L]
    # a first: rows of a, max over real columns of b, mean over real rows of a.
    row_best = sims.masked_fill(~bm[None, :, None, :], _NEG).amax(dim=3)  # [B, C, M]
    row_best = row_best.masked_fill(~am[:, None, :], 0.0)
    a_first = row_best.sum(dim=2) / na[:, None].to(row_best.dtype)
    # b first: columns of b, max over real rows of a, mean over real columns of b.
    col_best = sims.masked_fill(~am[:, None, :, None], _NEG).amax(dim=2)  # [B, C, L]
    col_best = col_best.masked_fill(~bm[None, :, :], 0.0)
    b_first = col_best.sum(dim=2) / nb[None, :].to(col_best.dtype)
    return torch.where(nb[None, :] < na[:, None], b_first, a_first)
