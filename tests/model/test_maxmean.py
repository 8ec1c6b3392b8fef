"""MaxMean: hand-computed values, the operand-order rule, masking and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from streamcover.model.maxmean import maxmean, maxmean_matrix, maxmean_padded


def _e(*idx: int, d: int = 4) -> torch.Tensor:
    """Rows that are unit basis vectors e_i."""
    out = torch.zeros(len(idx), d)
    for r, i in enumerate(idx):
        out[r, i] = 1.0
    return out


def test_hand_computed_pair() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    # row (1,0): max(cos45, 1, -1) = 1; row (0,1): max(cos45, 0, 0) = 0.7071
    assert maxmean(x, y).item() == pytest.approx((1 + math.sqrt(0.5)) / 2, abs=1e-6)


def test_scale_invariance_is_cosine() -> None:
    x = torch.randn(3, 8)
    y = torch.randn(5, 8)
    assert maxmean(x * 7.0, y * 0.1).item() == pytest.approx(maxmean(x, y).item(), abs=1e-6)


def test_shorter_sequence_goes_first() -> None:
    short = _e(0)  # one chunk
    long_ = _e(0, 1, 2)  # three chunks, one matches
    # short first: its one row finds e0 -> 1.0; long first would give (1+0+0)/3.
    assert maxmean(short, long_).item() == pytest.approx(1.0)
    assert maxmean(long_, short).item() == pytest.approx(1.0)


def test_tie_keeps_query_first() -> None:
    q = _e(0, 0)
    r = _e(0, 1)
    # q first: both rows find e0 -> 1. r first: (1 + 0) / 2.
    assert maxmean(q, r).item() == pytest.approx(1.0)
    assert maxmean(r, q).item() == pytest.approx(0.5)


def _pad(seqs: list[torch.Tensor], fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(s.shape[0] for s in seqs)
    out = torch.full((len(seqs), length, seqs[0].shape[1]), fill)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out, torch.tensor([s.shape[0] for s in seqs])


def test_padded_matches_pairwise_and_ignores_padding() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 16, generator=g)
    refs = [torch.randn(n, 16, generator=g) for n in (1, 2, 3, 5, 8)]
    padded, lengths = _pad(refs)
    res = maxmean_padded(q, padded, lengths)
    expected = torch.stack([maxmean(q, r) for r in refs])
    torch.testing.assert_close(res.scores, expected, atol=1e-6, rtol=0)
    # Garbage in the padding (huge, aligned with the query) changes nothing.
    garbage, _ = _pad(refs, fill=0.0)
    for i, n in enumerate(lengths.tolist()):
        garbage[i, n:] = q[0] * 1e3
    res2 = maxmean_padded(q, garbage, lengths)
    torch.testing.assert_close(res2.scores, res.scores, atol=1e-6, rtol=0)
    torch.testing.assert_close(res2.best_ref_chunk, res.best_ref_chunk)


def test_padded_alignment_is_query_to_reference_even_when_reference_is_shorter() -> None:
    q = _e(2, 0, 1)  # 3 query chunks
    ref = _e(0, 1)  # 2 reference chunks: shorter, so scored ref-first
    res = maxmean_padded(q, ref[None], torch.tensor([2]))
    assert res.best_ref_chunk.shape == (1, 3)
    assert res.best_ref_chunk[0, 1:].tolist() == [0, 1]  # e0 -> ref 0, e1 -> ref 1
    assert res.best_sim[0].tolist() == pytest.approx([0.0, 1.0, 1.0])
    assert res.scores.item() == pytest.approx(1.0)  # each ref chunk is found in the query


def test_padded_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError, match="ref_lengths"):
        maxmean_padded(torch.randn(2, 4), torch.randn(2, 3, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="ref_lengths"):
        maxmean_padded(torch.randn(2, 4), torch.randn(2, 3, 4), torch.tensor([4, 3]))


def test_matrix_matches_pairwise_with_masks() -> None:
    g = torch.Generator().manual_seed(1)
    a_seqs = [torch.randn(n, 8, generator=g) for n in (1, 3, 4)]
    b_seqs = [torch.randn(n, 8, generator=g) for n in (2, 3, 6, 1)]
    a, la = _pad(a_seqs, fill=5.0)
    b, lb = _pad(b_seqs, fill=-5.0)
    am = torch.arange(a.shape[1])[None] < la[:, None]
    bm = torch.arange(b.shape[1])[None] < lb[:, None]
    got = maxmean_matrix(a, am, b, bm)
    want = torch.tensor([[maxmean(x, y).item() for y in b_seqs] for x in a_seqs])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # Tie on length: a first (3 vs 3).
    assert got[1, 1].item() == pytest.approx(maxmean(a_seqs[1], b_seqs[1]).item(), abs=1e-6)


def test_matrix_gradients_reach_both_operands_but_not_padding() -> None:
    a = torch.randn(2, 3, 8, requires_grad=True)
    b = torch.randn(4, 2, 8, requires_grad=True)
    am = torch.tensor([[True, True, False], [True, True, True]])
    out = maxmean_matrix(a, am, b, None)
    out.sum().backward()
    assert a.grad is not None and b.grad is not None
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert a.grad[0, 2].abs().sum().item() == 0.0  # padded chunk gets no gradient
    assert a.grad[0, :2].abs().sum().item() > 0.0
    assert b.grad.abs().sum().item() > 0.0


def test_combine_directions_rules_on_arrays_and_tensors() -> None:
    import numpy as np

    from streamcover.model.maxmean import combine_directions

    qf, rf = np.array([0.8, 0.2, 0.5]), np.array([0.4, 0.6, 0.1])
    qlen, rlen = np.array(3), np.array([5, 2, 3])
    np.testing.assert_allclose(combine_directions(qf, rf, qlen, rlen, "symmetric"), [0.6, 0.4, 0.3])
    # Length-weighted: (5*0.8 + 3*0.4)/8, (2*0.2 + 3*0.6)/5, (3*0.5 + 3*0.1)/6.
    np.testing.assert_allclose(combine_directions(qf, rf, qlen, rlen), [0.65, 0.44, 0.3])
    # Shorter first: reference 1 is shorter than the query; on a tie the query goes first.
    np.testing.assert_allclose(combine_directions(qf, rf, qlen, rlen, "shorter_first"),
                               [0.8, 0.6, 0.5])
    t = combine_directions(torch.tensor(qf), torch.tensor(rf), torch.tensor(3),
                           torch.tensor([5, 2, 3]), "shorter_first")
    assert t.tolist() == pytest.approx([0.8, 0.6, 0.5])
    with pytest.raises(ValueError, match="score rule"):
        combine_directions(qf, rf, qlen, rlen, "longest")  # type: ignore[arg-type]


def test_settings_and_cli_offer_exactly_the_score_rules() -> None:
    from streamcover.commands.eval import score_rules
    from streamcover.model.maxmean import SCORE_RULES

    assert tuple(score_rules()) == SCORE_RULES
