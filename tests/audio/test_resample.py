"""The streaming resampler gives the offline result whatever the block sizes."""

from __future__ import annotations

import numpy as np

from streamcover.audio.resample import StreamResampler


def test_resampler_matches_offline_and_is_block_size_invariant() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(30_000).astype(np.float32)
    for a, b in [(22_050, 44_100), (48_000, 44_100), (44_100, 22_050)]:
        whole = StreamResampler(a, b).push(x)
        r = StreamResampler(a, b)
        parts = np.concatenate([r.push(x[i : i + n]) for i, n in _blocks(len(x), rng)])
        assert np.allclose(parts, whole[: len(parts)], atol=1e-5)
        assert abs(len(whole) - len(x) * b // a) < 40
        t = np.arange(len(whole)) / b
        sine = StreamResampler(a, b).push(np.sin(2 * np.pi * 440 * np.arange(len(x)) / a).astype(np.float32))
        assert np.abs(sine[100:] - np.sin(2 * np.pi * 440 * t[100:len(sine)])).max() < 1e-3


def _blocks(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    out, i = [], 0
    while i < n:
        k = int(rng.integers(1, 5000))
        out.append((i, k))
        i += k
    return out


def test_supported_rates_have_bounded_cached_filters_and_odd_rates_are_refused() -> None:
    import time

    import pytest

    from streamcover.audio.resample import MAX_TAPS, UnsupportedRate, filter_taps
    from streamcover.config import AudioSettings

    for rate in AudioSettings().supported_sample_rates:
        for target in (22_050, 44_100):
            assert filter_taps(rate, target) <= MAX_TAPS
    with pytest.raises(UnsupportedRate, match="191999 Hz to 44100 Hz needs a filter of 6143969 taps"):
        StreamResampler(191_999, 44_100)
    with pytest.raises(ValueError, match="bounded filter"):
        AudioSettings(supported_sample_rates=(8000, 191_999))
    # the filter of a ratio is designed once: a second resampler shares it and starts fast
    a = StreamResampler(8000, 44_100)
    t0 = time.perf_counter()
    b = StreamResampler(8000, 44_100)
    assert b.h is a.h and not b.h.flags.writeable
    assert time.perf_counter() - t0 < 0.01
    x = np.random.default_rng(1).standard_normal(8000).astype(np.float32)
    assert np.array_equal(a.push(x), b.push(x))
