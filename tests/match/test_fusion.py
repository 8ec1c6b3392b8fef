"""Stage-3 fusion: the fixed-range logistic score of MaxMean and alignment."""

from __future__ import annotations

import numpy as np
import pytest

from streamcover.match.fusion import DEFAULT_PARAMS, FusionParams, fit, fuse


def test_fused_score_in_unit_range_and_monotone() -> None:
    mm = np.linspace(-1, 1, 41)
    al = np.linspace(0, 1, 21)
    grid = fuse(mm[:, None] * np.ones((1, 21)), np.ones((41, 1)) * al[None, :])
    assert np.all((grid >= 0) & (grid <= 1))
    assert np.all(np.diff(grid, axis=0) >= 0) and np.all(np.diff(grid, axis=1) >= 0)
    assert DEFAULT_PARAMS.w_maxmean > 0 and DEFAULT_PARAMS.w_align > 0


def test_scalar_and_array_agree_and_extremes_do_not_overflow() -> None:
    p = FusionParams(bias=-3.0, w_maxmean=4.0, w_align=2.0)
    mm, al = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.4, 0.8])
    arr = fuse(mm, al, p)
    assert isinstance(fuse(0.5, 0.4, p), float)
    np.testing.assert_allclose(arr, [fuse(float(a), float(b), p) for a, b in zip(mm, al, strict=True)])
    np.testing.assert_allclose(fuse(0.5, 0.4, p), 1 / (1 + np.exp(-(-3 + 2 + 0.8))))
    huge = FusionParams(bias=0.0, w_maxmean=1e6, w_align=0.0)
    assert fuse(1.0, 0.0, huge) == 1.0 and fuse(-1.0, 0.0, huge) == 0.0


def test_non_finite_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        fuse(float("nan"), 0.5)
    with pytest.raises(ValueError, match="finite"):
        fuse(np.array([0.5, 0.2]), np.array([0.1, np.inf]))


def test_fit_recovers_known_weights() -> None:
    rng = np.random.default_rng(0)
    true = FusionParams(bias=-6.0, w_maxmean=5.0, w_align=7.0)
    mm, al = rng.uniform(-0.2, 1.0, 20000), rng.uniform(0.0, 1.0, 20000)
    y = rng.random(20000) < fuse(mm, al, true)
    got = fit(mm, al, y, ridge=0.0)
    assert got.bias == pytest.approx(true.bias, abs=0.5)
    assert got.w_maxmean == pytest.approx(true.w_maxmean, abs=0.5)
    assert got.w_align == pytest.approx(true.w_align, abs=0.5)


def test_fit_needs_both_classes_and_equal_lengths() -> None:
    with pytest.raises(ValueError, match="both"):
        fit(np.ones(5), np.ones(5), np.zeros(5, bool))
    with pytest.raises(ValueError, match="equally long"):
        fit(np.ones(5), np.ones(4), np.ones(5, bool))
