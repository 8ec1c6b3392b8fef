"""Chunking rules, offline and streamed, as properties (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcover.audio.chunking import (
    ChunkGeometry,
    chunk_features,
    normalize_chunks,
)

HPCP_FPS = 44_100 / 1024 / 20
CQT_FPS = 22_050 / 512 / 20


def _feat(n: int, bins: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((bins, n), dtype=np.float32) * 3.0


@pytest.mark.parametrize("fps", [HPCP_FPS, CQT_FPS])
def test_twenty_seconds_is_43_frames(fps: float) -> None:
    geo = ChunkGeometry.make(fps)
    assert geo.window == 43
    assert geo.hop == 22
    assert geo.min_frames == 12  # floor(6 s * 2.1533): what a 6 s clip yields


geometries = st.tuples(
    st.floats(1.0, 50.0),  # fps
    st.floats(2.0, 30.0),  # window_s
    st.floats(0.1, 1.0),  # hop as a fraction of the window
    st.floats(0.05, 1.0),  # min as a fraction of the window
)


@settings(max_examples=200, deadline=None)
@given(geometries, st.integers(0, 400))
def test_chunk_rules(geom: tuple[float, float, float, float], n: int) -> None:
    fps, window_s, hop_frac, min_frac = geom
    hop_s, min_s = window_s * hop_frac, window_s * min_frac
    geo = ChunkGeometry.make(fps, window_s, hop_s, min_s)
    feat = _feat(n, bins=3)
    chunks, starts = chunk_features(feat, fps, window_s, hop_s, min_s, normalize=False)
    w, h, m = geo.window, geo.hop, geo.min_frames
    assert len(chunks) == len(starts)
    frames = np.rint(starts * fps).astype(int)
    if n < m:
        assert len(chunks) == 0 and chunks.shape[1:] == (3, w)
        return
    if n < w:  # short clip: exactly one chunk, the whole clip, not padded
        assert chunks.shape == (1, 3, n)
        np.testing.assert_array_equal(chunks[0], feat)
        return
    assert chunks.shape[1:] == (3, w)
    # Every chunk is the slice at its start; starts are increasing and in range.
    for c, s in zip(chunks, frames, strict=True):
        np.testing.assert_array_equal(c, feat[:, s : s + w])
    assert (np.diff(frames) > 0).all() and frames[0] == 0 and frames[-1] + w <= n
    n_full = (n - w) // h + 1
    np.testing.assert_array_equal(frames[:n_full], np.arange(n_full) * h)
    # Coverage: what no chunk covers is a tail shorter than min_s.
    covered_to = frames[-1] + w
    assert n - covered_to < m
    # The tail window exists iff the tail after the full windows is >= min_s, end-aligned.
    tail = n - ((n_full - 1) * h + w)
    assert len(frames) == n_full + (1 if tail >= m else 0)
    if tail >= m:
        assert frames[-1] == n - w


def test_normalisation_per_chunk() -> None:
    feat = _feat(200) * np.linspace(0.1, 5.0, 200, dtype=np.float32)
    feat[:, :43] = 0.0  # a silent first chunk stays zero
    chunks, _ = chunk_features(feat, HPCP_FPS)
    peaks = chunks.reshape(len(chunks), -1).max(axis=1)
    assert peaks[0] == 0.0
    np.testing.assert_allclose(peaks[1:], 1.0, rtol=1e-6)
    # Each chunk is its raw slice divided by the slice's own max.
    raw, _ = chunk_features(feat, HPCP_FPS, normalize=False)
    np.testing.assert_allclose(chunks[2], raw[2] / raw[2].max(), rtol=1e-6)
    assert normalize_chunks(np.zeros((0, 12, 43), np.float32)).shape == (0, 12, 43)


def test_short_clip_rules() -> None:
    fps = HPCP_FPS
    six = math.floor(6 * fps)
    chunks, starts = chunk_features(_feat(six), fps)
    assert chunks.shape == (1, 12, six) and starts.tolist() == [0.0]
    chunks, _ = chunk_features(_feat(six - 1), fps)
    assert chunks.shape == (0, 12, 43)
    tiled, _ = chunk_features(_feat(20), fps, short="tile")
    assert tiled.shape == (1, 12, 43)
    np.testing.assert_array_equal(tiled[0, :, 20:40], tiled[0, :, :20])


def test_start_times_are_true_frame_times() -> None:
    _, starts = chunk_features(_feat(200), HPCP_FPS)
    np.testing.assert_allclose(starts[:3], np.array([0, 22, 44]) / HPCP_FPS)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        chunk_features(_feat(100)[0], HPCP_FPS)
    with pytest.raises(ValueError):
        ChunkGeometry.make(HPCP_FPS, window_s=10, hop_s=20)



def test_silent_chunks_are_those_mostly_digital_silence() -> None:
    from streamcover.audio.chunking import silent_chunks

    rng = np.random.default_rng(0)
    chunks = rng.uniform(0.1, 1.0, (4, 12, 43)).astype(np.float32)
    chunks[1] = 0.0  # all silent
    chunks[2, :, :22] = 0.0  # 22 of 43 frames silent: over half
    chunks[3, :, :21] = 0.0  # 21 of 43: under half
    chunks[0, :6, :] = 0.0  # some bins silent in every frame is not silence
    assert silent_chunks(chunks).tolist() == [False, True, True, False]
    assert silent_chunks(np.zeros((0, 12, 43), np.float32)).tolist() == []
    with pytest.raises(ValueError, match="chunks"):
        silent_chunks(np.zeros((12, 43), np.float32))
