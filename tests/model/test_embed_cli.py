"""`streamcover embed`: real file in, chunk count/starts/model id out, .npy saved."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamcover.cli import main
from streamcover.config import get_settings


def _tones(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.1 * np.sin(2 * np.pi * 220.0 * t) + 0.05 * np.sin(2 * np.pi * 330.0 * t)).astype(
        np.float32
    )


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("STREAMCOVER_ENCODER__THREADS", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_embed_prints_chunks_and_saves_vectors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sf = pytest.importorskip("soundfile")
    wav = tmp_path / "song.wav"
    sf.write(wav, _tones(26.0, 22_050), 22_050)  # decoded and resampled to 44.1 kHz for HPCP
    out = tmp_path / "vec.npy"
    rc = main(
        ["embed", str(wav), "--untrained", "compact-hpcp", "--device", "cpu", "--out", str(out)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "model: untrained-bytecover3-hpcp-compact-s0-" in text
    assert "chunks: 2" in text  # 26 s: window at 0 plus an end-aligned tail (6 s uncovered)
    vectors = np.load(out)
    starts = np.load(tmp_path / "vec.starts.npy")
    assert vectors.shape == (2, 512) and starts[0] == 0.0 and starts[1] > 5.0
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embed_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    assert main(["embed", str(bad), "--untrained", "compact-hpcp", "--device", "cpu"]) == 2
    assert "broken.mp3" in capsys.readouterr().err
    assert main(["embed", str(bad), "--model", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt not found" in capsys.readouterr().err
