"""Stage 3 (streamcover.match.verify): aligned leaders are re-scored, the rest are not."""

from __future__ import annotations

import numpy as np
import pytest

from streamcover.config import VerifySettings
from streamcover.match.align import FRAMES_PER_SECOND
from streamcover.match.fusion import fuse
from streamcover.match.verify import Verifier, quantise_features

# A major key's pitch classes, the tonic most often (music has a key profile, which OTI uses).
_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
_WEIGHT = np.array([4.0, 1.0, 2.0, 1.5, 3.0, 1.5, 0.5])


def _song(seed: int, frames: int = 400) -> np.ndarray:
    """A chroma sequence [T, 12] uint8: a random progression of in-key chords held 3-6 frames."""
    rng = np.random.default_rng(seed)
    key = int(rng.integers(12))
    out = np.zeros((frames, 12), np.float32)
    t = 0
    while t < frames:
        hold = int(rng.integers(3, 7))
        chord = np.zeros(12, np.float32)
        notes = rng.choice(_SCALE, size=3, replace=False, p=_WEIGHT / _WEIGHT.sum())
        chord[(notes + key) % 12] = rng.uniform(0.4, 1.0, size=3)
        chord[int(np.argmax(chord))] = 1.0
        out[t : t + hold] = chord + rng.uniform(0, 0.1, size=(min(hold, frames - t), 12))
        t += hold
    out /= out.max(axis=1, keepdims=True)
    return (out * 255).round().astype(np.uint8)


def _query_from(ref: np.ndarray, start: int, length: int, shift: int = 0) -> np.ndarray:
    """An excerpt of ``ref`` as the front end hands it over: [12, T] float in 0..1."""
    part = np.roll(ref[start : start + length].astype(np.float32) / 255.0, shift, axis=1)
    return np.ascontiguousarray(part.T)


def test_the_true_reference_is_lifted_above_an_unrelated_one_with_equal_maxmean() -> None:
    refs = [_song(1), _song(2)]
    query = _query_from(refs[0], 100, 130, shift=3)  # about 60 s, transposed
    v = Verifier(candidates=2)
    out = v.verify(query, refs, np.array([0.55, 0.55]))
    assert out.align[0] > 0.5 > out.align[1]
    assert out.fused[0] > out.fused[1]
    assert out.fused[0] == pytest.approx(fuse(0.55, float(out.align[0])), abs=1e-6)
    assert out.spans[0] is not None
    (qa, qb), (ra, rb) = out.spans[0]
    # the aligned reference span lies where the excerpt was cut (100 .. 230 frames)
    assert ra == pytest.approx(100 / FRAMES_PER_SECOND, abs=8 / FRAMES_PER_SECOND)
    assert rb == pytest.approx(230 / FRAMES_PER_SECOND, abs=8 / FRAMES_PER_SECOND)
    assert qb - qa > 0.8 * 130 / FRAMES_PER_SECOND


def test_only_the_first_candidates_are_aligned_and_missing_features_are_not() -> None:
    refs = [_song(3), None, _song(3)]
    query = _query_from(_song(3), 0, 100)
    v = Verifier(candidates=2)
    mm = np.array([0.6, 0.6, 0.6])
    out = v.verify(query, refs, mm)
    assert np.isfinite(out.align[0])
    assert np.isnan(out.align[1]) and np.isnan(out.align[2])  # no features; beyond the cap
    assert out.fused[1] == pytest.approx(float(v.unverified(mm)[1]))
    assert out.fused[2] == out.fused[1] < out.fused[0]
    assert out.spans[1] is None and out.spans[2] is None


def test_unverified_scores_keep_the_maxmean_order() -> None:
    v = Verifier()
    mm = np.array([0.9, 0.5, 0.2, np.nan])
    s = v.unverified(mm)
    assert s[0] > s[1] > s[2] >= s[3]
    assert np.all((s > 0) & (s < 1))


def test_empty_query_leaves_everything_unverified() -> None:
    v = Verifier()
    out = v.verify(np.zeros((12, 0), np.float32), [_song(4)], np.array([0.7]))
    assert np.isnan(out.align[0])
    assert out.fused[0] == pytest.approx(float(v.unverified(np.array([0.7]))[0]))


def test_mismatched_inputs_are_an_error() -> None:
    with pytest.raises(ValueError, match="2 scores for 1 references"):
        Verifier().verify(np.zeros((12, 50), np.float32), [_song(5)], np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="at least one candidate"):
        Verifier(candidates=0)


def test_settings_turn_stage_three_on_and_off() -> None:
    assert Verifier.from_settings(VerifySettings(enabled=False)) is None
    v = Verifier.from_settings(VerifySettings(candidates=5, max_query_seconds=60))
    assert v is not None and v.candidates == 5
    assert v.max_query_frames == round(60 * FRAMES_PER_SECOND)


def test_a_quantised_query_scores_as_the_float_one() -> None:
    """The monitor keeps its query as uint8 (quantise_features); identify passes floats."""
    ref = _song(6)
    query = _query_from(ref, 40, 120)
    v = Verifier(candidates=1)
    as_float = v.verify(query, [ref], np.array([0.5]))
    as_u8 = v.verify(quantise_features(query), [ref], np.array([0.5]))
    assert as_u8.align[0] == pytest.approx(float(as_float.align[0]), abs=0.02)
    assert as_u8.align[0] > 0.5
