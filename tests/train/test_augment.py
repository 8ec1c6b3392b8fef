from __future__ import annotations

import numpy as np
import pytest

from streamcover.train.augment import key_shift, stitch, time_stretch


def test_key_shift_circular_is_invertible_and_moves_pitch_class() -> None:
    feat = np.zeros((12, 5), np.float32)
    feat[3] = 1.0
    up = key_shift(feat, 4, circular=True)
    assert up[7].sum() == 5 and up[3].sum() == 0
    np.testing.assert_array_equal(key_shift(up, -4, circular=True), feat)
    # wraps around the octave
    assert key_shift(feat, 10, circular=True)[1].sum() == 5


def test_key_shift_linear_drops_bins_past_the_edge() -> None:
    feat = np.arange(84 * 2, dtype=np.float32).reshape(84, 2)
    up = key_shift(feat, 3, circular=False)
    np.testing.assert_array_equal(up[3:], feat[:-3])
    assert not up[:3].any()
    down = key_shift(feat, -5, circular=False)
    np.testing.assert_array_equal(down[:-5], feat[5:])
    assert not down[-5:].any()


@pytest.mark.parametrize("factor", [0.7, 1.0, 1.4])
def test_time_stretch_length_and_endpoints(factor: float) -> None:
    feat = np.linspace(0, 1, 100, dtype=np.float32)[None, :].repeat(12, 0)
    out = time_stretch(feat, factor)
    assert out.shape == (12, round(100 / factor))
    assert out[0, 0] == pytest.approx(0.0) and out[0, -1] == pytest.approx(1.0)
    # a linear ramp stays linear (interpolation, not nearest-neighbour)
    assert np.allclose(np.diff(out[0]), np.diff(out[0]).mean(), atol=1e-5)


def test_time_stretch_rejects_bad_factor() -> None:
    with pytest.raises(ValueError, match="factor"):
        time_stretch(np.ones((12, 10), np.float32), 0.0)


def test_stitch_keeps_length_and_takes_tail_from_other_version() -> None:
    rng = np.random.default_rng(0)
    a = np.zeros((12, 50), np.float32)
    b = np.ones((12, 80), np.float32)
    out = stitch(a, b, rng)
    assert out.shape == a.shape
    cut = int(np.argmax(out[0] > 0))
    assert 0 < cut < 50 and not out[:, :cut].any() and out[:, cut:].all()
