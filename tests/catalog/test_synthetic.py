"""The benchmark's data generators: structured synthetic works and fitted distractors."""

from __future__ import annotations

import numpy as np
import pytest

from streamcover.catalog.synthetic import (
    FittedCorpus,
    SyntheticCorpus,
    SyntheticSpec,
    fit_reference_stats,
    similarity_profile,
)


def _anisotropic_refs(n_refs: int, rho: float, seed: int) -> list[np.ndarray]:
    """References with a known low-rank spectrum and AR(1) chunk residuals."""
    rng = np.random.default_rng(seed)
    dim, rank = 64, 8
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0]
    centre = rng.standard_normal(dim)
    centre /= np.linalg.norm(centre)
    refs = []
    for _ in range(n_refs):
        m = centre + 0.5 * basis @ rng.standard_normal(rank)
        n = int(rng.integers(5, 30))
        r = 0.3 * basis @ rng.standard_normal(rank)
        rows = []
        for _t in range(n):
            r = rho * r + np.sqrt(1 - rho**2) * 0.3 * basis @ rng.standard_normal(rank)
            rows.append(m + r)
        v = np.asarray(rows, dtype=np.float32)
        refs.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return refs


def test_fitted_corpus_reproduces_the_real_statistics() -> None:
    real = _anisotropic_refs(600, rho=0.8, seed=1)
    stats = fit_reference_stats(real)
    assert 0.6 < stats.rho < 0.9
    fitted = [r.vectors for r in FittedCorpus(stats, seed=2).batch(0, 600)]
    want, got = similarity_profile(real), similarity_profile(fitted)
    assert got["cos_unrelated_mean"] == pytest.approx(want["cos_unrelated_mean"], abs=0.05)
    assert got["cos_consecutive_mean"] == pytest.approx(want["cos_consecutive_mean"], abs=0.05)
    # The spectrum carries over: nearly all variance in the real data's 8 directions.
    assert got["var_top10"] > 0.9
    # Isotropic synthetic works do not look like this data: the check can fail.
    iso = [r.vectors for r in SyntheticCorpus(SyntheticSpec(dim=64)).references(300)]
    assert similarity_profile(iso)["var_top10"] < 0.6
    with pytest.raises(ValueError, match="at least 2"):
        similarity_profile([real[0], np.zeros((0, 64), np.float32)])


def test_fitted_batches_are_deterministic_unit_rows() -> None:
    stats = fit_reference_stats(_anisotropic_refs(50, rho=0.5, seed=3))
    a = FittedCorpus(stats, seed=4).batch(100, 20)
    b = FittedCorpus(stats, seed=4).batch(100, 20)
    assert [r.id for r in a] == [f"fitted-{i:08d}" for i in range(100, 120)]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.vectors, y.vectors)
        np.testing.assert_allclose(np.linalg.norm(x.vectors, axis=1), 1.0, atol=1e-5)
        assert len(x.vectors) in set(stats.lengths.tolist())


def test_fit_needs_two_references() -> None:
    with pytest.raises(ValueError, match="two"):
        fit_reference_stats([np.ones((3, 4), np.float32)])
