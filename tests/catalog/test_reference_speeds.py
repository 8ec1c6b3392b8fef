"""Speed renders of references (``catalog.reference_speeds``): a re-upload played 6 % fast or
slow matches its reference again (real recordings, the shipped model), and a catalog built
at other speeds is refused for adding and rebuilt by ``reembed`` (real files, the CLI)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamcover.audio.decode import load_audio
from streamcover.audio.speed import change_speed
from streamcover.catalog.ingest import embed_reference
from streamcover.config import get_settings


@pytest.fixture
def speeds_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    def set_speeds(value: str) -> None:
        monkeypatch.setenv("STREAMCOVER_CATALOG__REFERENCE_SPEEDS", value)
        get_settings.cache_clear()

    yield set_speeds
    monkeypatch.delenv("STREAMCOVER_CATALOG__REFERENCE_SPEEDS", raising=False)
    get_settings.cache_clear()


def _maxmean(query: np.ndarray, ref: np.ndarray) -> float:
    return float((query @ ref.T).max(axis=1).mean())


@pytest.mark.slow
def test_speed_renders_match_a_sped_up_reupload(debian_music: list[Path]) -> None:
    from streamcover.model.loading import load_encoder

    encoder, _ = load_encoder(get_settings())
    fe = encoder.frontend
    track = next(p for p in debian_music if p.name == "track18.opus")
    wave = load_audio(track, fe.sample_rate)
    plain = embed_reference(encoder, wave, hop_seconds=5.0)
    rendered = embed_reference(encoder, wave, hop_seconds=5.0, speeds=(0.94, 1.06))
    # The recording's own chunks come first, unchanged; the renders' starts are in its time.
    assert np.array_equal(rendered.vectors[: len(plain)], plain.vectors)
    assert np.array_equal(rendered.starts[: len(plain)], plain.starts)
    assert len(plain) * 2.9 < len(rendered) < len(plain) * 3.1
    assert float(rendered.starts.max()) <= plain.duration_s
    assert rendered.features is not None and plain.features is not None
    assert np.array_equal(rendered.features, plain.features)
    seg = wave[33 * fe.sample_rate : 63 * fe.sample_rate]
    for speed in (0.94, 1.06):
        query = encoder.embed_features(fe.features(change_speed(seg, speed))).vectors
        before, after = _maxmean(query, plain.vectors), _maxmean(query, rendered.vectors)
        print(f"speed {speed}: MaxMean {before:.3f} -> {after:.3f}")
        assert before < 0.5 and after > 0.9


@pytest.mark.slow
def test_silence_in_a_reference_is_not_stored(debian_music: list[Path]) -> None:
    """A reference that ends in digital silence stores no chunk of it: otherwise the silent
    stretch of any stream would match those chunks exactly."""
    from streamcover.model.loading import load_encoder

    encoder, _ = load_encoder(get_settings())
    fe = encoder.frontend
    track = next(p for p in debian_music if p.name == "track18.opus")
    music = load_audio(track, fe.sample_rate)[: 60 * fe.sample_rate]
    wave = np.concatenate([music, np.zeros(60 * fe.sample_rate, np.float32)])
    emb = embed_reference(encoder, wave, hop_seconds=5.0, speeds=(0.94, 1.06))
    # Chunks are 20 s: a kept one starts before 50 s (at most half of it silence) in every render.
    assert len(emb) > 0 and float(emb.starts.max()) < 50.0 + 1.0
    silent = encoder.embed_features(fe.features(np.zeros(30 * fe.sample_rate, np.float32))).vectors
    assert len(silent) == 2
    best = float((silent @ emb.vectors.T).max())
    print(f"silent query chunk, best similarity to the reference: {best:.3f}")
    assert best < 0.6


def test_catalog_at_other_speeds_is_refused_and_rebuilt(
    tmp_path: Path, speeds_env: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    import structlog
    import torch

    from streamcover.catalog.store import Catalog
    from streamcover.cli import main
    from streamcover.model.checkpoint import save_checkpoint
    from streamcover.model.config import EncoderConfig
    from streamcover.model.net import CoverEncoder

    sr = 22_050
    rng = np.random.default_rng(3)
    import soundfile as sf

    for i in range(2):
        t = np.arange(30 * sr) / sr
        roots = 110.0 * 2 ** (rng.integers(0, 12, 15) / 12)
        x = np.sin(2 * np.pi * np.repeat(roots, 2 * sr)[: len(t)] * t)
        sf.write(tmp_path / f"song{i}.wav", (0.3 * x).astype(np.float32), sr)
    cfg = EncoderConfig.compact("hpcp", layers=(1, 1, 1, 1), widths=(4, 8, 8, 16), stem_channels=8)
    torch.manual_seed(1)
    model = tmp_path / "tiny.pt"
    save_checkpoint(model, CoverEncoder(cfg), cfg, model_id="tiny-speeds")
    cat = str(tmp_path / "catalog")

    def cli(*args: str) -> Any:
        capsys.readouterr()
        rc = main(list(args))
        out = capsys.readouterr()
        return rc, out.out, out.err

    try:
        speeds_env("[]")
        assert cli("catalog", "--catalog", cat, "add", str(tmp_path / "song0.wav"), "--model",
                   str(model), "--no-progress")[0] == 0
        with Catalog.open(cat, "r") as c:
            plain_chunks = c.stats()["chunks"]
            assert c.reference_speeds == ()
        speeds_env("[1.06, 0.94]")
        rc, out, _ = cli("catalog", "--catalog", cat, "stats", "--json")
        stats = json.loads(out)
        assert stats["reference_speeds"] == []
        assert any("speeds none" in r and "0.94, 1.06" in r for r in stats["needs_reembed"])
        # The monitor says so at start-up (the calibrated thresholds assume renders).
        from structlog.testing import capture_logs

        from streamcover.monitor.engine import warn_if_catalog_stale

        settings = get_settings().model_copy(update={"catalog": get_settings().catalog.model_copy(
            update={"path": Path(cat)})})
        with capture_logs() as logs:
            warn_if_catalog_stale(settings, "tiny-speeds")
        assert [e["event"] for e in logs] == ["catalog_needs_reembed"]
        assert any("0.94, 1.06" in r for r in logs[0]["reasons"])
        rc, _, err = cli("catalog", "--catalog", cat, "add", str(tmp_path / "song1.wav"),
                         "--model", str(model), "--no-progress")
        assert rc == 2 and "reembed" in err and "0.94, 1.06" in err
        rc, out, _ = cli("catalog", "--catalog", cat, "reembed", "--model", str(model), "--no-progress")
        assert rc == 0 and "speed renders 0.94, 1.06" in out
        with Catalog.open(cat, "r") as c:
            stats = c.stats()
            assert c.reference_speeds == (0.94, 1.06)
            assert stats["references"] == 1 and stats["chunks"] > 2.5 * plain_chunks
        rc, out, _ = cli("catalog", "--catalog", cat, "stats", "--json")
        assert json.loads(out)["needs_reembed"] == []
        with capture_logs() as logs:
            warn_if_catalog_stale(settings, "tiny-speeds")
        assert logs == []
        assert cli("catalog", "--catalog", cat, "add", str(tmp_path / "song1.wav"), "--model",
                   str(model), "--no-progress")[0] == 0
    finally:
        structlog.reset_defaults()  # main() points structlog at the captured stream
