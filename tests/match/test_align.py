"""Stage-3 alignment: Qmax over a cross-recurrence plot, with OTI transposition."""

from __future__ import annotations

import librosa.sequence
import numpy as np
import pytest

from streamcover.match.align import (
    Alignment,
    align,
    align_candidates,
    embed_frames,
    oti_shifts,
    qmax,
)


def chords(seed: int, frames: int) -> np.ndarray:
    """A chord progression as HPCP [12, T] in 0..1: triads held 2-7 frames, plus noise."""
    rng = np.random.default_rng(seed)
    out = np.zeros((12, frames), np.float32)
    t = 0
    while t < frames:
        root, hold = int(rng.integers(12)), int(rng.integers(2, 8))
        third = 3 if rng.random() < 0.5 else 4
        for b, w in ((root, 1.0), ((root + third) % 12, 0.8), ((root + 7) % 12, 0.7)):
            out[b, t : t + hold] = w
        t += hold
    out += 0.15 * rng.random(out.shape).astype(np.float32)
    return out / out.max(axis=0, keepdims=True)


def as_ref(x: np.ndarray) -> np.ndarray:
    """Catalog layout: uint8 [T, 12]."""
    return np.round(x.T * 255).astype(np.uint8)


def stretch(x: np.ndarray, factor: float) -> np.ndarray:
    """Resample [12, T] in time by ``factor`` (1.1 = 10 % longer), linear interpolation."""
    n = x.shape[1]
    t = np.linspace(0, n - 1, round(n * factor))
    return np.stack([np.interp(t, np.arange(n), row) for row in x]).astype(np.float32)


def test_identity_scores_highest_and_full() -> None:
    x = chords(1, 200)
    res = align_candidates(x, [as_ref(chords(s, 300)) for s in (2, 3, 4)] + [as_ref(x)])
    assert res[-1].score == pytest.approx(1.0, abs=0.02)
    assert res[-1].query_span == (0, 200) and res[-1].reference_span == (0, 200)
    assert res[-1].score > max(r.score for r in res[:-1]) + 0.4


def test_unrelated_sequences_score_low() -> None:
    vals = [align(chords(10 + s, 130), as_ref(chords(50 + s, 520))).score for s in range(5)]
    assert max(vals) < 0.35


@pytest.mark.parametrize("roll", [1, 5, 7, 11])
def test_transposed_copy_recovers_shift(roll: int) -> None:
    x = chords(5, 150)
    ref = as_ref(np.roll(x, roll, axis=0))
    res = align(x, ref)
    assert res.shift == (-roll) % 12
    assert res.score > 0.9
    assert oti_shifts(x.T, ref.astype(np.float32) / 255, 12)[0] == (-roll) % 12
    # Without the right shift it does not align.
    assert align(x, ref, transpositions=12).shift == res.shift


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_time_stretched_copy_still_aligns(factor: float) -> None:
    x = chords(7, 200)
    res = align(stretch(x, factor), as_ref(x))
    unrelated = align(stretch(x, factor), as_ref(chords(8, 200)))
    assert res.score > 0.5
    assert res.score > unrelated.score + 0.3


def test_excerpt_span_is_located_in_reference() -> None:
    before, middle, after = chords(20, 150), chords(21, 100), chords(22, 120)
    ref = as_ref(np.concatenate([before, middle, after], axis=1))
    res = align(middle, ref)
    assert abs(res.query_span[0]) <= 2 and abs(res.query_span[1] - 100) <= 2
    assert abs(res.reference_span[0] - 150) <= 2 and abs(res.reference_span[1] - 250) <= 2
    assert res.score > 0.9


def test_batched_equals_single() -> None:
    q = chords(30, 120)
    refs = [as_ref(chords(s, n)) for s, n in ((31, 400), (32, 90), (33, 250))]
    refs.append(as_ref(np.roll(q, 2, axis=0)))
    batch = align_candidates(q, refs, transpositions=3)
    assert batch == [align(q, r, transpositions=3) for r in refs]


def test_too_short_or_empty_scores_zero() -> None:
    x = chords(40, 100)
    for q, r in ((x[:, :0], as_ref(x)), (x[:, :5], as_ref(x)), (x, as_ref(x)[:3])):
        res = align(q, r)
        assert isinstance(res, Alignment) and res.score == 0.0 and res.qmax == 0.0
    assert align_candidates(x, []) == []


@pytest.mark.parametrize("query, ref, msg", [
    (np.zeros((100, 12), np.float32), np.zeros((100, 12), np.uint8), "query must be HPCP"),
    (np.zeros((12, 100), np.float32), np.zeros((12, 100), np.uint8), "reference must be HPCP"),
    (np.full((12, 50), np.nan, np.float32), np.zeros((50, 12), np.uint8), "non-finite"),
    (np.zeros((12, 50), np.int64), np.zeros((50, 12), np.uint8), "uint8 or float"),
])
def test_malformed_input_is_a_clear_error(query: np.ndarray, ref: np.ndarray, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        align(query, ref)


def test_bad_parameters_are_rejected() -> None:
    x = chords(41, 60)
    for kw in ({"kappa": 0.0}, {"dim": 0}, {"transpositions": 13}):
        with pytest.raises(ValueError):
            align(x, as_ref(x), **kw)


def test_silence_and_constant_input_do_not_align() -> None:
    silent = np.zeros((12, 200), np.float32)
    assert align(silent, np.zeros((200, 12), np.uint8)).score == 0.0
    flat = np.full((12, 200), 0.5, np.float32)
    other = np.zeros((12, 200), np.float32)
    other[3] = 1.0
    assert align(flat, as_ref(other)).score < 0.2


def test_lengths_are_capped() -> None:
    x = chords(42, 300)
    res = align(x, as_ref(x), max_query_frames=100, max_reference_frames=150)
    assert (res.query_frames, res.reference_frames) == (100, 150)
    assert res.query_span[1] <= 100 and res.reference_span[1] <= 150


def test_qmax_matches_librosa_rqa() -> None:
    rng = np.random.default_rng(3)
    for density in (0.05, 0.2, 0.5):
        rec = (rng.random((70, 90)) < density).astype(np.uint8)
        value, start, end = qmax(rec, 5.0, 0.5)
        oracle = librosa.sequence.rqa(rec.astype(np.float64), gap_onset=5.0, gap_extend=0.5,
                                      knight_moves=True, backtrack=False)
        assert value == pytest.approx(oracle.max())
        assert rec[end] == 1 and rec[start] == 1
        assert start[0] <= end[0] and start[1] <= end[1]


def test_embedding_shape_and_silence_mask() -> None:
    x = chords(43, 50).T.copy()
    x[10] = 0.0
    emb, voiced = embed_frames(x, 4, 2)
    assert emb.shape == (50 - 6, 48)
    assert not voiced[10] and not voiced[4] and voiced[11]
    np.testing.assert_array_equal(emb[0, 12:24], x[2])
