"""HPCP against the recipe of /work/shared/data/README.md, Essentia as the test-only oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from streamcover.audio.hpcp import (
    DEFAULT_PARAMS,
    blackman_harris_92,
    hpcp_frames,
    hpcp_frames_many,
    hpcp_pooled,
    pool_hpcp,
)

SR = 44_100
SHARED_NPZ = Path("/work/shared/data/shs100k_test_hpcp_u8.npz")


def _tone(freqs: list[float], seconds: float = 3.0, harmonics: int = 1) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    x = np.zeros_like(t)
    for f in freqs:
        for h in range(1, harmonics + 1):
            x += 0.3 / h * np.sin(2 * np.pi * f * h * t)
    return x.astype(np.float32)


def test_window_is_symmetric_blackman_harris_summing_to_two() -> None:
    w = blackman_harris_92(4096)
    assert w.sum() == pytest.approx(2.0, rel=1e-6)
    np.testing.assert_allclose(w, w[::-1], atol=1e-9)
    assert w[0] == pytest.approx(6e-5 * 2 / (0.35875 * 4095), rel=0.1)  # a0-a1+a2-a3 = 6e-5


@pytest.mark.parametrize(
    ("freq", "pitch_class"),
    [(440.0, 0), (466.16, 1), (523.25, 3), (261.63, 3), (392.0, 10), (110.0, 0), (1318.5, 7)],
)
def test_pure_tone_lands_in_its_pitch_class(freq: float, pitch_class: int) -> None:
    pooled = hpcp_pooled(_tone([freq])).numpy()
    assert pooled.shape[1] == 12
    assert (pooled.argmax(axis=1) == pitch_class).all()


def test_harmonic_tone_keeps_its_root() -> None:
    # A harmonic-rich A (110 Hz): every partial's f/h sub-harmonics reinforce A, which stays
    # on top; the 3f partial (E) shows in its own class, and the recipe's f/3 mapping of
    # the A partials puts energy on D (A/3 is a D); classes no partial or f/h reaches
    # (A#, B) stay near zero.
    prof = hpcp_pooled(_tone([110.0], harmonics=6)).numpy().mean(axis=0)
    assert prof.argmax() == 0
    assert prof[0] == pytest.approx(1.0)
    assert prof[7] > 0.05 and prof[5] > 0.05
    assert prof[[1, 2]].max() < 0.05


def test_silence_stays_zero_and_lengths() -> None:
    x = np.zeros(SR * 2, dtype=np.float32)
    frames = hpcp_frames(x)
    assert frames.shape == (DEFAULT_PARAMS.n_frames(len(x)), 12)
    assert float(frames.abs().max()) == 0.0
    assert pool_hpcp(frames).shape == (frames.shape[0] // 20, 12)
    # 20 s of audio -> 43 pooled frames (2.1533 fps).
    assert hpcp_pooled(np.zeros(SR * 20, dtype=np.float32)).shape == (43, 12)


def test_batch_equals_single(music_excerpt: Any) -> None:
    a = music_excerpt(0, SR)[: SR * 10]
    b = music_excerpt(1, SR)[: SR * 10]
    batch = hpcp_frames(torch.from_numpy(np.stack([a, b])))
    torch.testing.assert_close(batch[0], hpcp_frames(a), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(batch[1], hpcp_frames(b), atol=1e-6, rtol=1e-5)


def test_many_segments_equal_each_alone(music_excerpt: Any) -> None:
    """The monitor's batched path: frames of many segments (uneven lengths, some too short
    for a frame, blocks splitting segments) in shared blocks == each segment on its own."""
    rng = np.random.default_rng(3)
    segs = []
    lengths = [0, 100, 4095, 4096, 5000, 4096 + 1024 * 30 + 5, 4096 + 1024 * 59, 4096 + 1024 * 7 + 1023,
               4096 + 1024 * 100]
    for i, n in enumerate(lengths):
        x = music_excerpt(i % 3, SR)
        a = int(rng.integers(0, len(x) - n))
        segs.append(x[a : a + n])
    alone = [hpcp_frames(s, center=False).numpy() for s in segs]
    for block in (7, 64, 512):
        many = hpcp_frames_many(segs, block_frames=block)
        assert [m.shape for m in many] == [a.shape for a in alone]
        for m, a in zip(many, alone, strict=True):
            np.testing.assert_allclose(m, a, rtol=1e-5, atol=1e-6)
    assert sum(len(a) for a in alone) > 100
    assert hpcp_frames_many([]) == []


def _essentia_hpcp(x: np.ndarray, recipe: bool) -> np.ndarray:
    """Frame-level HPCP by Essentia's FrameCutter/Windowing/Spectrum/SpectralPeaks/HPCP.

    ``recipe=True``: Essentia's HPCP has its own harmonic weighting, not the README's
    0.6^(h-1); to make it compute the README recipe, its HPCP (harmonics=0) is given each
    peak at f/h with magnitude m·sqrt(0.6^(h-1)) for h = 1..8, so every contribution is
    Essentia's own squared-cosine weight times m²·0.6^(h-1). ``recipe=False``: stock
    Essentia with harmonics=7 (fundamental + 7), the closest built-in setting.
    """
    import essentia.standard as es

    window = es.Windowing(type="blackmanharris92", normalized=True)
    spectrum = es.Spectrum()
    peaks = es.SpectralPeaks(
        minFrequency=40,
        maxFrequency=5000,
        maxPeaks=30,
        magnitudeThreshold=1e-5,
        orderBy="magnitude",
        sampleRate=SR,
    )
    common = dict(
        size=12,
        referenceFrequency=440,
        bandPreset=False,
        weightType="squaredCosine",
        nonLinear=False,
        windowSize=4 / 3,
        normalized="unitMax",
        sampleRate=SR,
    )
    if recipe:
        hpcp = es.HPCP(harmonics=0, minFrequency=1, maxFrequency=20000, **common)
    else:
        hpcp = es.HPCP(harmonics=7, minFrequency=40, maxFrequency=5000, **common)
    h = np.arange(1, 9)
    out = []
    for frame in es.FrameGenerator(x, frameSize=4096, hopSize=1024, startFromZero=False):
        f, m = peaks(spectrum(window(frame)))
        if recipe:
            f = (f[:, None] / h).astype(np.float32).ravel()
            m = (m[:, None] * np.sqrt(0.6 ** (h - 1))).astype(np.float32).ravel()
        out.append(hpcp(f, m) if len(f) else np.zeros(12, np.float32))
    return np.asarray(out, dtype=np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("track", [0, 1, 2])
def test_matches_essentia_oracle_on_real_music(music_excerpt: Any, track: int) -> None:
    """Compared: frame-level HPCP [F, 12] and the 20-frame pooled HPCP of 30 s of real music.

    Essentia's FrameGenerator (startFromZero=False) centres frame 0 on t = 0 like ours and
    adds zero-padded frames past the end, which ours omits: the first F frames are compared.
    """
    x = music_excerpt(track, SR)
    ours = hpcp_frames(x).numpy()
    oracle = _essentia_hpcp(x, recipe=True)
    n = ours.shape[0]
    assert oracle.shape[0] >= n
    oracle = oracle[:n]
    frame_corr = np.corrcoef(ours.ravel(), oracle.ravel())[0, 1]
    po = pool_hpcp(torch.from_numpy(ours)).numpy()
    pe = pool_hpcp(torch.from_numpy(np.ascontiguousarray(oracle))).numpy()
    pooled_corr = np.corrcoef(po.ravel(), pe.ravel())[0, 1]
    assert frame_corr >= 0.999, frame_corr
    assert pooled_corr >= 0.999, pooled_corr
    # Stock Essentia (its own harmonic weights) is close too, but not the recipe.
    stock = pool_hpcp(torch.from_numpy(_essentia_hpcp(x, recipe=False)[:n])).numpy()
    assert np.corrcoef(po.ravel(), stock.ravel())[0, 1] >= 0.995


def _stats(feat: np.ndarray) -> dict[str, float]:
    rows = feat[feat.max(axis=1) > 0]
    return {
        "mean": float(rows.mean()),
        "std": float(rows.std()),
        "median": float(np.median(rows)),
        "bins_over_half": float((rows > 0.5).sum(axis=1).mean()),
    }


def test_real_music_looks_like_the_shared_features(debian_music: list[Path]) -> None:
    """Pooled HPCP of real music has the shared npz's value distribution.

    The shared features (SHS100K-TEST, popular music) have mean 0.33, sd 0.30, median 0.23
    and 2.7 bins > 0.5 per frame. The first 20 s of every other track of the soundtrack
    (orchestral to electronic, ~18 pieces) should land near those figures; single pieces
    vary a lot (means 0.16-0.52), so the comparison is over the set.
    """
    if not SHARED_NPZ.exists():
        pytest.fail(f"shared features {SHARED_NPZ} are missing")
    from streamcover.audio.decode import load_audio

    ref = np.load(SHARED_NPZ)["feat"][::7].astype(np.float32) / 255.0
    ours = np.concatenate(
        [hpcp_pooled(load_audio(p, SR, max_seconds=20.0)).numpy() for p in debian_music[::2]]
    )
    assert ours.min() >= 0.0 and ours.max() <= 1.0
    nonzero = ours.max(axis=1) > 0
    np.testing.assert_allclose(ours[nonzero].max(axis=1), 1.0, rtol=1e-6)
    a, b = _stats(ours), _stats(ref)
    assert abs(a["mean"] - b["mean"]) < 0.06, (a, b)
    assert abs(a["std"] - b["std"]) < 0.04, (a, b)
    assert abs(a["median"] - b["median"]) < 0.08, (a, b)
    assert abs(a["bins_over_half"] - b["bins_over_half"]) < 1.0, (a, b)
