"""Encoder: batching across lengths, determinism, checkpoints, and real audio end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamcover.config import Settings
from streamcover.model.checkpoint import CheckpointError, save_checkpoint
from streamcover.model.config import EncoderConfig
from streamcover.model.inference import Encoder

TINY = {"layers": (1, 1, 1, 1), "widths": (4, 8, 8, 16), "stem_channels": 8}


def _settings(**encoder: object) -> Settings:
    return Settings(_env_file=None, encoder={"threads": 1, **encoder})


@pytest.fixture(scope="module")
def hpcp_encoder() -> Encoder:
    return Encoder.untrained(EncoderConfig.compact("hpcp", **TINY), seed=1, settings=_settings())


def _chunks(rng: np.random.Generator, n: int, t: int, bins: int = 12) -> np.ndarray:
    return rng.random((n, bins, t), dtype=np.float32)


def test_embed_chunks_unit_vectors_any_lengths_in_order(hpcp_encoder: Encoder) -> None:
    rng = np.random.default_rng(0)
    mixed = [c for t in (43, 13, 43, 20, 13) for c in _chunks(rng, 1, t)]
    out = hpcp_encoder.embed_chunks(mixed)
    assert out.shape == (5, 512) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([hpcp_encoder.embed_chunks([c]) for c in mixed])
    np.testing.assert_allclose(out, one_by_one, atol=1e-5)
    assert np.abs(out[0] - out[2]).max() > 1e-3  # different chunks, different vectors


def test_small_batches_give_the_same_vectors() -> None:
    cfg = EncoderConfig.compact("hpcp", **TINY)
    big = Encoder.untrained(cfg, seed=2, settings=_settings(batch_size=64))
    small = Encoder.untrained(cfg, seed=2, settings=_settings(batch_size=3))
    assert big.model_id == small.model_id
    x = _chunks(np.random.default_rng(1), 10, 43)
    np.testing.assert_allclose(big.embed_chunks(x), small.embed_chunks(x), atol=1e-5)


def test_optimized_runner_matches_plain_model() -> None:
    cfg = EncoderConfig.compact("cqt", **TINY)
    fast = Encoder.untrained(cfg, seed=4, settings=_settings())
    plain = Encoder.untrained(cfg, seed=4, settings=_settings(), optimize=False)
    x = _chunks(np.random.default_rng(2), 4, 43, bins=84)
    np.testing.assert_allclose(fast.embed_chunks(x), plain.embed_chunks(x), atol=1e-5)


def test_cpu_bf16_is_close_to_fp32() -> None:
    cfg = EncoderConfig.compact("hpcp", **TINY)
    fp32 = Encoder.untrained(cfg, seed=6, device="cpu", settings=_settings())
    bf16 = Encoder.untrained(cfg, seed=6, device="cpu", settings=_settings(cpu_precision="bf16"))
    x = _chunks(np.random.default_rng(5), 6, 43)
    a, b = fp32.embed_chunks(x), bf16.embed_chunks(x)
    assert b.dtype == np.float32
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.98 and np.abs(a - b).max() > 0  # close, and really bf16


def test_untrained_is_deterministic_in_seed() -> None:
    cfg = EncoderConfig.compact("hpcp", **TINY)
    a, b = (Encoder.untrained(cfg, seed=7, settings=_settings()) for _ in range(2))
    c = Encoder.untrained(cfg, seed=8, settings=_settings())
    assert a.model_id == b.model_id != c.model_id
    assert a.model_id.startswith("untrained-")


def test_bad_chunks_are_refused(hpcp_encoder: Encoder) -> None:
    with pytest.raises(ValueError, match=r"chunk 0 has shape \(84, 43\)"):
        hpcp_encoder.embed_chunks([np.zeros((84, 43), np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        hpcp_encoder.embed_chunks(np.full((1, 12, 20), np.nan, np.float32))
    assert hpcp_encoder.embed_chunks(np.zeros((0, 12, 43), np.float32)).shape == (0, 512)


def test_from_checkpoint_keeps_id_and_refuses_other_configs(tmp_path: Path) -> None:
    enc = Encoder.untrained(EncoderConfig.compact("hpcp", **TINY), seed=5, settings=_settings())
    mid = save_checkpoint(tmp_path / "m.pt", enc.model, enc.cfg)
    loaded = Encoder.from_checkpoint(tmp_path / "m.pt", settings=_settings())
    assert loaded.model_id == mid
    x = _chunks(np.random.default_rng(3), 3, 30)
    np.testing.assert_allclose(loaded.embed_chunks(x), enc.embed_chunks(x), atol=1e-5)
    with pytest.raises(CheckpointError, match="embed_dim"):
        Encoder.from_checkpoint(
            tmp_path / "m.pt", expect=enc.cfg.model_copy(update={"embed_dim": 256})
        )


def _music(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """A few seconds of chords: harmonic tones changing every second, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for k in range(int(np.ceil(seconds))):
        seg = (t >= k) & (t < k + 1)
        for midi in rng.choice(np.arange(48, 72), size=3, replace=False):
            f0 = 440.0 * 2 ** ((midi - 69) / 12)
            for h in range(1, 4):
                out[seg] += 0.6 ** (h - 1) * np.sin(2 * np.pi * f0 * h * t[seg])
    out += 0.01 * rng.standard_normal(len(t))
    return (0.2 * out / np.abs(out).max()).astype(np.float32)


def test_embed_audio_file_end_to_end(tmp_path: Path, hpcp_encoder: Encoder) -> None:
    sf = pytest.importorskip("soundfile")
    sr = hpcp_encoder.frontend.sample_rate
    wave = _music(38.0, sr)
    path = tmp_path / "clip.wav"
    sf.write(path, wave, sr, subtype="FLOAT")
    from_file = hpcp_encoder.embed(path)
    from_wave = hpcp_encoder.embed(wave)
    # 38 s: full windows at 0 and ~10 s, plus an end-aligned tail (> 6 s uncovered).
    assert len(from_file) == 3
    assert from_file.starts[0] == 0.0 and 9.5 < from_file.starts[1] < 10.5
    assert 17.0 < from_file.starts[2] < 18.5
    assert from_file.duration_s == pytest.approx(38.0, abs=0.01)
    np.testing.assert_allclose(np.linalg.norm(from_file.vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(from_file.vectors, from_wave.vectors, atol=1e-4)
    # Too short to embed (< min_clip_seconds): no chunks, not an error.
    assert len(hpcp_encoder.embed(wave[: 3 * sr])) == 0


def test_embed_features_honours_the_hop_and_returns_the_features(hpcp_encoder: Encoder) -> None:
    from streamcover.audio.chunking import ChunkGeometry

    fps = hpcp_encoder.frontend.frames_per_second
    feat = np.random.default_rng(5).random((12, 260), dtype=np.float32)  # ~121 s
    default = hpcp_encoder.embed_features(feat)
    assert default.features is feat
    a = hpcp_encoder.settings.audio
    for hop in (5.0, 2.5):
        emb = hpcp_encoder.embed_features(feat, hop_seconds=hop)
        geo = ChunkGeometry.make(fps, a.window_seconds, hop, a.min_clip_seconds)
        full, tail = geo.starts(feat.shape[1])
        frames = np.round(emb.starts * fps).astype(int)
        assert list(frames) == full + ([tail] if tail is not None else [])
        assert len(emb) > len(default)
        # A window both grids share is the same window, so the same vector.
        dframes = np.round(default.starts * fps).astype(int)
        shared = np.intersect1d(frames, dframes)
        assert shared.size >= 2
        np.testing.assert_allclose(emb.vectors[np.searchsorted(frames, shared)],
                                   default.vectors[np.searchsorted(dframes, shared)], atol=1e-5)
    assert np.diff(default.starts[:2])[0] == pytest.approx(round(a.hop_seconds * fps) / fps)


def test_embed_file_returns_the_front_end_features(tmp_path: Path, hpcp_encoder: Encoder) -> None:
    sf = pytest.importorskip("soundfile")
    sr = hpcp_encoder.frontend.sample_rate
    wave = _music(30.0, sr)
    sf.write(tmp_path / "c.wav", wave, sr, subtype="FLOAT")
    emb = hpcp_encoder.embed(tmp_path / "c.wav", hop_seconds=5.0)
    assert emb.features is not None and emb.features.shape[0] == 12
    np.testing.assert_allclose(emb.features, hpcp_encoder.frontend.features(wave), atol=1e-5)
    assert np.diff(emb.starts[:2])[0] < 6.0
