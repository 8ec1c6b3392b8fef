from __future__ import annotations

import numpy as np
import pytest

from streamcover.eval.baselines import Ftm2dEmbedder, ftm2d


def _chroma(seed: int, t: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    theme = rng.random((12, 20)) ** 3
    return np.tile(theme, (1, t // 20 + 1))[:, :t].astype(np.float32)


def test_2dftm_is_invariant_to_key_and_nearly_to_time_offset() -> None:
    x = _chroma(0)
    base = ftm2d(x)
    assert base.shape == (12 * 75,)
    np.testing.assert_allclose(ftm2d(np.roll(x, 5, axis=0)), base, rtol=1e-5, atol=1e-6)
    shifted = ftm2d(np.roll(x, 7, axis=1))
    assert np.corrcoef(shifted, base)[0, 1] > 0.99


def test_2dftm_separates_works_and_pads_short_clips() -> None:
    emb = Ftm2dEmbedder()
    a, a_cover, b = _chroma(1), np.roll(_chroma(1), 3, axis=0), _chroma(2)
    va, vc, vb = (v[0] for v in emb([a, a_cover, b]))
    assert va @ vc > va @ vb
    short = emb([a[:, :20]])[0]
    assert short.shape == (1, 900) and np.isclose(np.linalg.norm(short), 1.0)


def test_2dftm_pca_projects_to_requested_dims() -> None:
    emb = Ftm2dEmbedder(pca_dims=3)
    emb.fit_pca([_chroma(s) for s in range(6)])
    out = emb([_chroma(9)])
    assert out[0].shape == (1, 3)


def test_2dftm_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        ftm2d(np.zeros((12, 0), np.float32))
