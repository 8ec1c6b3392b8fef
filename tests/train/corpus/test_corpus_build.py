"""A tiny real corpus build: decodable audio, valid manifest, disjoint split, versions that differ
in key/tempo yet share the melody. Real parsing, rendering and decoding; no mocks."""

from __future__ import annotations

import json
from pathlib import Path

import music21  # noqa: F401  (required: fail loudly if set-up missed it)
import numpy as np
import pedalboard  # noqa: F401  (required: fail loudly if set-up missed it)
import pytest
import tinysoundfont  # noqa: F401  (required: fail loudly if set-up missed it)

from streamcover.train.corpus.build import BuildOptions, build_corpus

SR = 22_050


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    # Essen variants only: no Debian download needed (the soundfont ships with pretty_midi).
    build_corpus(BuildOptions(out=out, works=3, versions=2, seed=7, sources=["essen"],
                              jobs=1, progress=False, max_seconds=40.0,
                              debian_dir=out / "no-debian", fetch=False))
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "versions.jsonl").read_text().splitlines()]


def test_manifest_reads_with_the_training_reader(tiny: Path) -> None:
    from streamcover.train.manifest import read_manifest

    entries = read_manifest(tiny / "manifest.jsonl")
    assert len(entries) == 6
    assert {e.path.resolve() for e in entries} == {Path(r["path"]).resolve() for r in _records(tiny)}
    per_split = sum(len(read_manifest(tiny / f"manifest-{s}.jsonl")) for s in ("train", "val", "test")
                    if (tiny / f"manifest-{s}.jsonl").read_text().strip())
    assert per_split == 6


def _decode(path: str) -> np.ndarray:
    from streamcover.audio.decode import load_audio

    return load_audio(path, SR)


def test_manifest_is_valid_and_audio_decodes(tiny: Path) -> None:
    records = _records(tiny)
    works = {r["work"] for r in records}
    assert len(works) == 3
    assert len(records) == 6
    for r in records:
        for key in ("work", "path", "title", "artist", "source", "licence", "params"):
            assert r[key] not in (None, ""), key
        assert Path(r["path"]).is_file()
        assert not Path(r["path"]).is_relative_to(Path(__file__).resolve().parents[3])
        wave = _decode(r["path"])
        assert abs(len(wave) / SR - r["duration_s"]) < 0.1
        assert len(wave) > 5 * SR
        assert 1e-3 < float(np.sqrt(np.mean(wave**2))) < 1.0


def test_split_covers_each_work_once(tiny: Path) -> None:
    split = json.loads((tiny / "split.json").read_text())
    listed = [w for s in ("train", "val", "test") for w in split[s]]
    assert len(listed) == len(set(listed))
    assert set(listed) == {r["work"] for r in _records(tiny)}
    for r in _records(tiny):
        assert r["work"] in split[r["split"]]


def test_licences_name_every_used_package(tiny: Path) -> None:
    lic = {e["package"]: e for e in json.loads((tiny / "licences.json").read_text())}
    for r in _records(tiny):
        assert r["package"] in lic and lic[r["package"]]["licence"]
    assert lic["pretty_midi"]["versions_using"] >= 1  # TimGM6mb rendered the versions


def _chroma(wave: np.ndarray) -> np.ndarray:
    """Duration-summed pitch-class energy (12,), from an STFT: the tune's pitch content."""
    n = 4096
    frames = np.lib.stride_tricks.sliding_window_view(wave, n)[:: n // 2] * np.hanning(n)
    mag = np.abs(np.fft.rfft(frames, axis=1)).sum(axis=0)
    freqs = np.fft.rfftfreq(n, 1 / SR)
    keep = (freqs > 80) & (freqs < 2000)
    pcs = np.round(12 * np.log2(freqs[keep] / 440.0)).astype(int) % 12
    chroma = np.bincount(pcs, weights=mag[keep], minlength=12)
    return chroma / np.linalg.norm(chroma)


def _best_corr(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    scores = [float(np.corrcoef(a, np.roll(b, k))[0, 1]) for k in range(12)]
    return max(scores), int(np.argmax(scores))


def test_versions_differ_but_share_the_melody(tiny: Path) -> None:
    records = _records(tiny)
    by_work: dict[str, list[dict]] = {}
    for r in records:
        by_work.setdefault(r["work"], []).append(r)
    chroma = {r["path"]: _chroma(_decode(r["path"])) for r in records}
    same, other = [], []
    for work, rs in by_work.items():
        a, b = sorted(rs, key=lambda r: r["version"])
        pa, pb = a["params"], b["params"]
        # Versions differ in key or tempo (version 1 is never the plain reference).
        assert (pb["transpose"], round(pb["tempo"], 3)) != (pa["transpose"], round(pa["tempo"], 3))
        assert a["path"] != b["path"]
        same.append(_best_corr(chroma[a["path"]], chroma[b["path"]])[0])
        for other_work, ors in by_work.items():
            if other_work != work:
                other.append(_best_corr(chroma[a["path"]], chroma[ors[0]["path"]])[0])
    # Transposition-invariant chroma: versions of one work match better than different works.
    assert np.median(same) > np.median(other)


def test_rebuild_is_resumable_and_deterministic(tiny: Path) -> None:
    before = {r["path"]: Path(r["path"]).stat().st_mtime_ns for r in _records(tiny)}
    result = build_corpus(BuildOptions(out=tiny, works=3, versions=2, seed=7, sources=["essen"],
                                       jobs=1, progress=False, max_seconds=40.0,
                                       debian_dir=tiny / "no-debian", fetch=False))
    after = {r["path"]: Path(r["path"]).stat().st_mtime_ns for r in _records(tiny)}
    assert after == before  # same seed → same params → same files, none re-rendered
    assert result.stats["versions"] == 6
