"""Front-ends: shapes, batching, and exact incremental streaming on real music."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from streamcover.audio.frontend import CQTFrontEnd, FrontEnd, HPCPFrontEnd, make_frontend, push_many
from streamcover.config import FrontEndSettings


@pytest.fixture(scope="module", params=["hpcp", "hpcp-44100", "cqt"])
def frontend(request: pytest.FixtureRequest) -> FrontEnd:
    if request.param == "hpcp-44100":
        return make_frontend(FrontEndSettings(name="hpcp", hpcp_sample_rate=44_100))
    return make_frontend(FrontEndSettings(name=request.param))


def test_half_rate_hpcp_matches_the_recipe(music_excerpt: Any) -> None:
    """HPCP from 22.05 kHz audio (2048/512 frames) against the 44.1 kHz recipe, same music."""
    full = make_frontend(FrontEndSettings(name="hpcp", hpcp_sample_rate=44_100))
    half = make_frontend(FrontEndSettings(name="hpcp"))  # the default
    assert half.sample_rate == 22_050
    assert half.frames_per_second == pytest.approx(full.frames_per_second)
    for i in range(3):
        a = full.features(music_excerpt(i, 44_100))
        b = half.features(music_excerpt(i, 22_050))
        assert a.shape == b.shape
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.9999


def test_hpcp_rate_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamcover.config import Settings

    monkeypatch.setenv("STREAMCOVER_FRONTEND__HPCP_SAMPLE_RATE", "44100")
    assert make_frontend(Settings().frontend).sample_rate == 44_100


def test_make_frontend() -> None:
    h = make_frontend(FrontEndSettings(name="hpcp"))
    assert isinstance(h, HPCPFrontEnd)
    assert (h.name, h.sample_rate, h.n_bins) == ("hpcp", 22_050, 12)
    assert h.frames_per_second == pytest.approx(2.1533, abs=1e-4)
    c = make_frontend(FrontEndSettings(name="cqt", cqt_pool=20))
    assert isinstance(c, CQTFrontEnd)
    assert (c.name, c.sample_rate, c.n_bins, c.pool) == ("cqt", 22_050, 84, 20)
    assert c.frames_per_second == pytest.approx(2.1533, abs=1e-4)
    assert make_frontend(FrontEndSettings(name="cqt", cqt_pool=6)).frames_per_second == (
        pytest.approx(22_050 / 512 / 6)
    )


def test_twenty_seconds_gives_43_frames(frontend: FrontEnd) -> None:
    x = np.random.default_rng(0).standard_normal(frontend.sample_rate * 20).astype(np.float32)
    feat = frontend.features(0.1 * x)
    assert feat.shape == (frontend.n_bins, 43) == (frontend.n_bins, frontend.n_frames(len(x)))
    assert feat.dtype == np.float32 and np.isfinite(feat).all()


def test_batch_matches_single(frontend: FrontEnd, music_excerpt: Any) -> None:
    sr = frontend.sample_rate
    waves = np.stack([music_excerpt(i, sr)[: sr * 12] for i in range(3)])
    batch = frontend.features_batch(torch.from_numpy(waves))
    assert batch.shape == (3, frontend.n_bins, frontend.n_frames(sr * 12))
    for i in range(3):
        np.testing.assert_allclose(
            batch[i].numpy(), frontend.features(waves[i]), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_stream_equals_offline(frontend: FrontEnd, music_excerpt: Any, seed: int) -> None:
    """Arbitrary block sizes (1 sample to 3 s) give the offline features, frame for frame."""
    sr = frontend.sample_rate
    x = music_excerpt(seed % 3, sr)[: sr * 15]
    offline = frontend.features(x)
    rng = np.random.default_rng(seed)
    stream = frontend.stream()
    out = []
    pos = 0
    while pos < len(x):
        size = int(rng.choice([1, 7, 511, 4096, int(rng.integers(1, 3 * sr))]))
        new = stream.push(x[pos : pos + size])
        assert new.shape[0] == frontend.n_bins
        out.append(new)
        pos += size
        assert stream.frames_emitted == sum(o.shape[1] for o in out)
    tail = stream.flush()
    assert stream.frames_emitted == sum(o.shape[1] for o in out) + tail.shape[1]
    got = np.concatenate([*out, tail], axis=1)
    assert got.shape == offline.shape
    scale = float(np.abs(offline).max())
    np.testing.assert_allclose(got, offline, rtol=1e-4, atol=1e-5 * scale)


def test_push_many_equals_per_stream_pushes(frontend: FrontEnd, music_excerpt: Any) -> None:
    """The monitor's batched path: many streams pushed together, in uneven blocks (some
    empty, some with no frame due), give each stream's own ``push`` results, and
    ``frames_after`` predicts every stream's frame count before the push."""
    sr = frontend.sample_rate
    rng = np.random.default_rng(7)
    n = 6
    waves = [music_excerpt(i % 3, sr)[(i * sr) // 3 :] for i in range(n)]
    alone = [frontend.stream() for _ in range(n)]
    together = [frontend.stream() for _ in range(n)]
    pos = [0] * n
    got_alone: list[list[np.ndarray]] = [[] for _ in range(n)]
    got_together: list[list[np.ndarray]] = [[] for _ in range(n)]
    for _ in range(12):
        sizes = [int(rng.choice([0, 1, 300, sr // 2, int(rng.integers(1, 2 * sr))])) for _ in range(n)]
        blocks = [waves[i][pos[i] : pos[i] + sizes[i]] for i in range(n)]
        expect = [s.frames_after(len(b)) for s, b in zip(together, blocks, strict=True)]
        for i in range(n):
            got_alone[i].append(alone[i].push(blocks[i]))
            pos[i] += sizes[i]
        outs = push_many(together, blocks)
        assert [s.frames_emitted for s in together] == expect == [s.frames_emitted for s in alone]
        for i, o in enumerate(outs):
            assert o.shape[0] == frontend.n_bins
            got_together[i].append(o)
    assert sum(s.frames_emitted for s in together) > 3 * n
    for a, t in zip(got_alone, got_together, strict=True):
        np.testing.assert_allclose(np.concatenate(t, axis=1), np.concatenate(a, axis=1), rtol=1e-5, atol=1e-6)
    assert push_many([], []) == []


def test_push_many_bad_input(frontend: FrontEnd) -> None:
    s = frontend.stream()
    with pytest.raises(ValueError, match="appears twice"):
        push_many([s, s], [np.zeros(10, np.float32)] * 2)
    with pytest.raises(ValueError, match="blocks"):
        push_many([s], [])
    other = make_frontend(FrontEndSettings(name="cqt" if frontend.name == "hpcp" else "hpcp")).stream()
    with pytest.raises(ValueError, match="one front end"):
        push_many([s, other], [np.zeros(10, np.float32)] * 2)
    # A bad block leaves every stream untouched.
    t = frontend.stream()
    with pytest.raises(ValueError, match="mono"):
        push_many([s, t], [np.zeros(10, np.float32), np.zeros((2, 10), np.float32)])
    assert s.samples_seen == t.samples_seen == 0


def test_six_second_clip_gives_one_chunk(frontend: FrontEnd) -> None:
    from streamcover.audio.chunking import chunk_features

    x = np.random.default_rng(1).standard_normal(frontend.sample_rate * 6).astype(np.float32)
    feat = frontend.features(0.1 * x)
    assert feat.shape[1] == 12
    chunks, starts = chunk_features(feat, frontend.frames_per_second)
    assert chunks.shape == (1, frontend.n_bins, 12) and starts.tolist() == [0.0]


def test_stream_transforms_each_sample_once(frontend: FrontEnd) -> None:
    """The stream holds less than one frame support, whatever was pushed."""
    stream = frontend.stream()
    sr = frontend.sample_rate
    for _ in range(5):
        stream.push(np.zeros(sr * 3, dtype=np.float32))
        # Less than a pooled frame of samples beyond one frame support, and no raw frames
        # waiting beyond one incomplete group.
        span = frontend.context_left + frontend.context_right
        assert len(stream._buf) < span + frontend.pool * frontend.hop
        assert stream._n_raw < frontend.pool


def test_bad_input(frontend: FrontEnd) -> None:
    with pytest.raises(ValueError):
        frontend.features(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError):
        frontend.features_batch(torch.zeros(100))
    assert frontend.features(np.zeros(0, np.float32)).shape == (frontend.n_bins, 0)
    with pytest.raises(ValueError):
        make_frontend(FrontEndSettings(name="hpcp", hpcp_sample_rate=16_000))
    stream = frontend.stream()
    assert stream.flush().shape == (frontend.n_bins, 0)
    with pytest.raises(RuntimeError):
        stream.push(np.zeros(10, np.float32))
