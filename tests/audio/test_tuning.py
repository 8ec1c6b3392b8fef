"""The tuning fold: phase 0 is the recipe, detuned real music moves to the sharp phase, and
the fold's state survives a checkpoint exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from streamcover.audio.frontend import HPCPFrontEnd
from streamcover.audio.hpcp import HPCPParams, hpcp_frames
from streamcover.audio.speed import change_speed
from streamcover.audio.tuning import TuningFold


def _frames(spread0: float, spread1: float, n: int) -> np.ndarray:
    """Pooled 2-phase frames whose unit-max profiles sum to the given spreads."""
    x = np.zeros((n, 24), dtype=np.float32)
    x[:, 0] = 1.0
    x[:, 1] = spread0 - 1.0
    x[:, 12] = 1.0
    x[:, 13] = spread1 - 1.0
    return x


def test_fold_moves_only_past_the_hysteresis() -> None:
    fold = TuningFold(2, 12, memory=5, hysteresis=0.1)
    out = fold(_frames(1.5, 1.4, 10))  # phase 1 only 6.7 % less spread: stays on phase 0
    assert fold.phase == 0 and np.allclose(out[:, 1], 0.5)
    out = fold(_frames(1.9, 1.2, 10))  # clearly sharper on phase 1
    assert fold.phase == 1 and np.allclose(out[-1, 1], 0.2)


def test_one_phase_is_the_identity() -> None:
    x = np.random.default_rng(0).random((7, 12)).astype(np.float32)
    assert np.array_equal(TuningFold(1, 12)(x), x)
    with pytest.raises(ValueError, match=r"\[T, 24\]"):
        TuningFold(2, 12)(x)


def test_phase_zero_is_the_recipe_bit_for_bit(music_excerpt: Any) -> None:
    wave = torch.from_numpy(music_excerpt(0, 44_100)[: 44_100 * 5])
    one = hpcp_frames(wave, HPCPParams())
    two = hpcp_frames(wave, HPCPParams(tuning_phases=2))
    assert two.shape[-1] == 24
    assert torch.equal(two[:, :12], one)


@pytest.mark.parametrize("speed", [0.97, 1.03])
def test_half_a_semitone_off_is_folded_back(music_excerpt: Any, speed: float) -> None:
    """Real music played 3 % off speed sits ~half a semitone off the grid: the fold moves to
    the shifted phase, and the folded chroma of the two versions agree far better than the
    recipe's do (the catalog and the stream both fold)."""
    wave = music_excerpt(1, 44_100)
    fast = change_speed(wave, speed)
    plain = HPCPFrontEnd(HPCPParams())
    tuned = HPCPFrontEnd(HPCPParams(tuning_phases=2))

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        # Pitch-class histograms over the whole excerpt (the time scales differ by 3 %).
        x, y = a.sum(axis=1), b.sum(axis=1)
        return max(float(np.corrcoef(x, np.roll(y, k))[0, 1]) for k in range(12))

    stream = tuned.stream()
    folded = np.concatenate([stream.push(fast), stream.flush()], axis=1)
    assert stream.fold is not None and stream.fold.phase == 1
    assert np.array_equal(folded, tuned.features(fast))
    recipe = corr(plain.features(wave), plain.features(fast))
    assert corr(tuned.features(wave), folded) > recipe + 0.05
    assert corr(tuned.features(wave), folded) > 0.85


def test_fold_state_survives_a_checkpoint() -> None:
    rng = np.random.default_rng(3)
    frames = rng.random((120, 24)).astype(np.float32)
    frames[40:, 12:] *= 0.5  # the second half favours phase 1
    whole = TuningFold(2, 12)(frames)
    first = TuningFold(2, 12)
    first(frames[:70])
    phase, recent = first.state()
    resumed = TuningFold(2, 12)
    resumed.restore(phase, recent)
    resumed.hold(1)
    resumed(frames[69:70])  # the frame a restored stream recomputes and discards
    assert np.array_equal(resumed(frames[70:]), whole[70:])
    odd = TuningFold(3, 12)
    odd.restore(phase, recent)  # another phase count: starts afresh rather than misreading
    assert odd.phase == 0 and odd.state() == (0, b"")
