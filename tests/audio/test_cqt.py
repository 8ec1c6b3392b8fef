"""The torch CQT against librosa.cqt (test-only dependency)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from streamcover.audio.cqt import CQTParams, CQTTransform, cqt_frequencies
from streamcover.audio.frontend import CQTFrontEnd

SR = 22_050


def _librosa_cqt(x: np.ndarray) -> np.ndarray:
    import librosa

    return np.abs(
        librosa.cqt(
            x,
            sr=SR,
            hop_length=512,
            fmin=librosa.note_to_hz("C1"),
            n_bins=84,
            bins_per_octave=12,
            tuning=0.0,
        )
    )


def test_frequencies() -> None:
    f = cqt_frequencies(CQTParams())
    assert f[0] == pytest.approx(32.703, abs=1e-3)
    assert f[45] == pytest.approx(440.0, rel=1e-9)  # A4
    assert f[-1] == pytest.approx(3951.07, abs=0.01)  # B7


@pytest.mark.parametrize("bin_index", [0, 5, 12, 30, 45, 57, 70, 83])
def test_pure_tone_peaks_in_its_bin(bin_index: int) -> None:
    fe = CQTFrontEnd(pool=1)
    f = cqt_frequencies(fe.params)[bin_index]
    x = (0.5 * np.sin(2 * np.pi * f * np.arange(SR * 3) / SR)).astype(np.float32)
    c = fe.features(x)
    steady = c[:, 20:-20]
    assert (steady.argmax(axis=0) == bin_index).all()
    # Neighbouring semitones are about half the peak (Hann kernels, Q = 17.3, as librosa).
    assert steady[bin_index].mean() > 1.5 * max(
        steady[max(0, bin_index - 1)].mean() if bin_index else 0.0,
        steady[min(83, bin_index + 1)].mean() if bin_index < 83 else 0.0,
    )


def test_level_matches_librosa_for_tones() -> None:
    fe = CQTFrontEnd(pool=1)
    for k in (0, 83):
        f = cqt_frequencies(fe.params)[k]
        x = (0.5 * np.sin(2 * np.pi * f * np.arange(SR * 2) / SR)).astype(np.float32)
        ours = fe.features(x)[k, 43]
        ref = _librosa_cqt(x)[k, 43]
        assert ours == pytest.approx(ref, rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("track", [0, 1, 2])
def test_correlates_with_librosa_on_real_music(music_excerpt: Any, track: int) -> None:
    """Compared: magnitude CQT [84, T] of 30 s of real music, both framed at t = k·512.

    librosa (center=True, zero padding, tuning fixed at 0) has extra frames at the end
    that ours drops (incomplete support); the first T frames are compared, raw (pool 1)
    and after the same mean pooling by 20 frames. Pearson correlation over all cells.
    """
    x = music_excerpt(track, SR)
    ours = CQTFrontEnd(pool=1).features(x)
    ref = _librosa_cqt(x)[:, : ours.shape[1]]
    assert ref.shape == ours.shape
    raw_corr = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    t = ours.shape[1] // 20 * 20
    po = ours[:, :t].reshape(84, -1, 20).mean(-1)
    pr = ref[:, :t].reshape(84, -1, 20).mean(-1)
    pooled_corr = np.corrcoef(po.ravel(), pr.ravel())[0, 1]
    assert raw_corr >= 0.99, raw_corr
    assert pooled_corr >= 0.99, pooled_corr
    # Per bin too: no octave is mis-scaled or aliased.
    per_bin = [np.corrcoef(po[k], pr[k])[0, 1] for k in range(84) if pr[k].std() > 0]
    assert min(per_bin) >= 0.98


def test_support_is_finite() -> None:
    """A frame does not change when samples beyond ``context`` of its centre change."""
    tr = CQTTransform()
    rng = np.random.default_rng(0)
    n = 2 * tr.context + 512 * 10
    x = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).unsqueeze(0)
    base = tr.frames(x)
    y = x.clone()
    y[0, : 512 * 3] += 1.0  # only frames 0..2 reach this far left
    changed = (tr.frames(y) - base).abs().amax(dim=-1)[0] > 1e-6
    assert changed[:3].any() and not changed[3:].any()


def test_batched_on_float64_and_shapes() -> None:
    tr = CQTTransform()
    x = torch.randn(3, 2 * tr.context + 512 * 4, dtype=torch.float64)
    out = tr.frames(x)
    assert out.shape == (3, 5, 84) and out.dtype == torch.float64
    assert tr.frames(torch.zeros(1, 100)).shape == (1, 0, 84)
    # Cutting a long input into blocks (bounded memory) changes nothing.
    long = torch.randn(2, 2 * tr.context + 512 * 300)
    torch.testing.assert_close(tr.frames(long, block_frames=64), tr.frames(long), rtol=0, atol=0)
