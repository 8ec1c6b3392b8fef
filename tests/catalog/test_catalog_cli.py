"""`streamcover catalog` and `streamcover identify` end to end: real audio files, a real
(untrained) encoder checkpoint, the real command-line entry point (in-process, so the
encoder and torch load once instead of once per command)."""

from __future__ import annotations

import json
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from streamcover.model.checkpoint import save_checkpoint
from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder

SR = 22_050
TINY = {"layers": (1, 1, 1, 1), "widths": (4, 8, 8, 16), "stem_channels": 8}


def _write_song(path: Path, seed: int, seconds: float = 40.0) -> None:
    """Chords of harmonic tones changing every 2 s: pitched content the HPCP front-end sees."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(2.0 * SR)) / SR
    parts = []
    for _ in range(int(seconds / 2)):
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        seg = np.zeros_like(t)
        for ratio in (1.0, 2 ** (4 / 12), 2 ** (7 / 12)):
            for h in range(1, 5):
                seg += np.sin(2 * np.pi * root * ratio * h * t) / h
        parts.append(seg * np.hanning(len(t)) ** 0.2)
    x = np.concatenate(parts)
    pcm = (0.25 * x / np.abs(x).max() * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def _excerpt(src: Path, dst: Path, start_s: float, seconds: float) -> None:
    with wave.open(str(src), "rb") as r:
        r.setpos(int(start_s * SR))
        frames = r.readframes(int(seconds * SR))
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(frames)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    for i in range(3):
        _write_song(d / f"song{i}.wav", seed=10 + i)
    _excerpt(d / "song1.wav", d / "clip.wav", 10.0, 30.0)
    for seed in (1, 2):
        cfg = EncoderConfig.compact("hpcp", **TINY)
        import torch

        torch.manual_seed(seed)
        save_checkpoint(d / f"model{seed}.pt", CoverEncoder(cfg), cfg, model_id=f"tiny-s{seed}")
    (d / "refs.csv").write_text(
        "id,path,title,artist,rights_holder,isrc\n"
        "REF-0,song0.wav,Song Zero,Ann,Label A,XX0\n"
        "REF-1,song1.wav,Song One,Bob,Label B,XX1\n"
    )
    return {"dir": d, "catalog": d / "catalog"}


class _Out:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., _Out]]:
    import structlog

    from streamcover.cli import main

    def run(*args: str, check: bool = True) -> _Out:
        capsys.readouterr()
        rc = main(list(args))
        cap = capsys.readouterr()
        out = _Out(rc, cap.out, cap.err)
        if check:
            assert rc == 0, cap.err
        return out

    yield run
    # main() points structlog at the captured stderr; later tests must not log into it.
    structlog.reset_defaults()


@pytest.mark.slow
def test_add_list_identify_remove(setup: dict[str, Path], cli: Callable[..., _Out]) -> None:
    d, cat = setup["dir"], str(setup["catalog"])
    m1 = str(d / "model1.pt")
    out = cli("catalog", "--catalog", cat, "add", "--manifest", str(d / "refs.csv"),
               "--model", m1, "--no-progress")
    assert "added 2, skipped 0" in out.stdout
    # Plain paths: song0 is already stored (same content), song2 is new; re-running is a no-op.
    out = cli("catalog", "--catalog", cat, "add", str(d / "song0.wav"), str(d / "song2.wav"),
               "--model", m1, "--no-progress")
    assert "added 1, skipped 1" in out.stdout
    out = cli("catalog", "--catalog", cat, "add", "--manifest", str(d / "refs.csv"),
               str(d / "song2.wav"), "--model", m1, "--no-progress")
    assert "added 0, skipped 3" in out.stdout

    rows = [json.loads(x) for x in cli("catalog", "--catalog", cat, "list", "--json")
            .stdout.splitlines()]
    assert [r["id"] for r in rows][:2] == ["REF-0", "REF-1"] and len(rows) == 3
    assert rows[1]["title"] == "Song One" and rows[1]["isrc"] == "XX1"
    assert rows[1]["rights_holder"] == "Label B"
    assert rows[1]["duration"] == pytest.approx(40.0, abs=0.1)
    # References sit on the catalog.reference_hop_seconds grid, cut from the stored features.
    from streamcover.audio.chunking import ChunkGeometry
    from streamcover.catalog.store import Catalog
    from streamcover.config import get_settings

    with Catalog.open(cat, "r") as c:
        frames = c.ref_features("REF-1")
        fps = c.feature_fps
    assert fps is not None and frames.dtype == np.uint8 and frames.shape[1] == 12
    assert frames.shape[0] == pytest.approx(40.0 * fps, abs=1.5)
    geo = ChunkGeometry.make(fps, 20.0, get_settings().catalog.reference_hop_seconds, 6.0)
    full, tail = geo.starts(frames.shape[0])
    # ... and so do its speed renders (catalog.reference_speeds), cut from their own features.
    from streamcover.audio.decode import load_audio
    from streamcover.audio.frontend import make_frontend
    from streamcover.audio.speed import change_speed

    fe = make_frontend(get_settings().frontend)
    wave = load_audio(d / "song1.wav", fe.sample_rate)
    renders = 0
    for speed in get_settings().catalog.reference_speeds:
        r_full, r_tail = geo.starts(fe.features(change_speed(wave, speed)).shape[1])
        renders += len(r_full) + (r_tail is not None)
    assert rows[1]["chunks"] == len(full) + (tail is not None) + renders
    assert len(full) > 3
    assert rows[2]["id"].startswith("sha256:")

    stats = json.loads(cli("catalog", "--catalog", cat, "stats", "--json").stdout)
    assert stats["references"] == 3 and stats["model_id"] == "tiny-s1"
    assert stats["snapshot"]["behind_by_versions"] == 0

    hits = json.loads(cli("identify", str(d / "clip.wav"), "--catalog", cat, "--model", m1,
                           "--json").stdout)
    assert hits[0]["reference_id"] == "REF-1"
    assert hits[0]["metadata"]["artist"] == "Bob"
    # The clip starts 10 s into song1: its chunks line up with the reference chunks that
    # start near 10 s and 20 s (chunk starts sit on the front-end's frame grid).
    assert [a["query_start_s"] for a in hits[0]["alignment"]] == [0.0, pytest.approx(10.2, 0.1)]
    # (The untrained encoder cannot tell the later chunks' neighbours on the denser
    # reference grid apart reliably; the first one is exact.)
    assert hits[0]["alignment"][0]["ref_start_s"] == pytest.approx(10.0, abs=0.5)
    assert min(a["sim"] for a in hits[0]["alignment"]) > 0.9
    table = cli("identify", str(d / "clip.wav"), "--catalog", cat, "--model", m1).stdout
    assert "REF-1" in table and "Song One" in table

    # Another model's query is refused with a clear error.
    bad = cli("identify", str(d / "clip.wav"), "--catalog", cat, "--model",
               str(d / "model2.pt"), check=False)
    assert bad.returncode == 2 and "tiny-s2" in bad.stderr and "tiny-s1" in bad.stderr

    cli("catalog", "--catalog", cat, "remove", "REF-1")
    gone = cli("catalog", "--catalog", cat, "remove", "REF-1", check=False)
    assert gone.returncode == 2 and "REF-1" in gone.stderr
    hits = json.loads(cli("identify", str(d / "clip.wav"), "--catalog", cat, "--model", m1,
                           "--json").stdout)
    assert "REF-1" not in [h["reference_id"] for h in hits]
    out = cli("catalog", "--catalog", cat, "compact")
    assert "2 live chunks" not in out.stdout and "compacted" in out.stdout
    assert "ok:" in cli("catalog", "--catalog", cat, "verify").stdout

    # reembed: rebuild for model 2 from the stored source paths; model 1 is refused after.
    out = cli("catalog", "--catalog", cat, "reembed", "--model", str(d / "model2.pt"),
               "--no-progress")
    assert "re-embedded 2" in out.stdout
    stats = json.loads(cli("catalog", "--catalog", cat, "stats", "--json").stdout)
    assert stats["model_id"] == "tiny-s2" and stats["references"] == 2
    hits = json.loads(cli("identify", str(d / "song0.wav"), "--catalog", cat, "--model",
                           str(d / "model2.pt"), "--json").stdout)
    assert hits[0]["reference_id"] == "REF-0"


def test_bad_inputs_are_named(
    setup: dict[str, Path], tmp_path: Path, cli: Callable[..., _Out]
) -> None:
    d = setup["dir"]
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really audio")
    out = cli("catalog", "--catalog", str(tmp_path / "c"), "add", str(tmp_path / "junk.wav"),
               str(d / "song0.wav"), "--model", str(d / "model1.pt"), "--no-progress",
               check=False)
    assert out.returncode == 1
    assert "junk.wav" in out.stderr and "added 1" in out.stdout
    missing = cli("catalog", "--catalog", str(tmp_path / "c"), "add", str(tmp_path / "nope.wav"),
                   "--model", str(d / "model1.pt"), check=False)
    assert missing.returncode == 2 and "nope.wav" in missing.stderr
    nocat = cli("catalog", "--catalog", str(tmp_path / "none"), "list", check=False)
    assert nocat.returncode == 2 and "no catalog" in nocat.stderr


@pytest.mark.slow
def test_reembed_rebuilds_an_old_format_catalog_with_the_same_model(
    setup: dict[str, Path], tmp_path: Path, cli: Callable[..., _Out]
) -> None:
    """A catalog from before reference hops and stored features (same model) is reported by
    `stats` and rebuilt by `reembed`; a current catalog is left alone unless forced."""
    import sqlite3

    from streamcover.catalog.store import Catalog
    from streamcover.config import get_settings

    d, cat = setup["dir"], str(tmp_path / "old")
    m1 = str(d / "model1.pt")
    cli("catalog", "--catalog", cat, "add", "--manifest", str(d / "refs.csv"), "--model", m1,
        "--no-progress")
    # Make it what older code wrote: no feature tables, no recorded hop.
    db = sqlite3.connect(Path(cat) / "catalog.sqlite")
    db.executescript("DROP TABLE ref_features; DROP TABLE feature_segments; "
                     "DELETE FROM meta WHERE key IN ('reference_hop_seconds', 'feature_fps', "
                     "'feature_bins');")
    db.close()
    stats = json.loads(cli("catalog", "--catalog", cat, "stats", "--json").stdout)
    assert stats["feature_references"] == 0 and stats["reference_hop_seconds"] is None
    assert any("unrecorded" in r for r in stats["needs_reembed"])
    assert any("2 of 2" in r for r in stats["needs_reembed"])
    assert "needs_reembed: yes" in cli("catalog", "--catalog", cat, "stats").stdout
    # Adding to it is refused with the way out named.
    bad = cli("catalog", "--catalog", cat, "add", str(d / "song2.wav"), "--model", m1,
              "--no-progress", check=False)
    assert bad.returncode == 2 and "reembed" in bad.stderr

    out = cli("catalog", "--catalog", cat, "reembed", "--model", m1, "--no-progress")
    assert "re-embedded 2" in out.stdout and "unrecorded" in out.stdout
    stats = json.loads(cli("catalog", "--catalog", cat, "stats", "--json").stdout)
    hop = get_settings().catalog.reference_hop_seconds
    assert stats["reference_hop_seconds"] == hop and stats["feature_references"] == 2
    assert stats["needs_reembed"] == [] and stats["model_id"] == "tiny-s1"
    with Catalog.open(cat, "r") as c:
        assert c.ref_features("REF-0").shape[1] == 12
        assert c.get("REF-1").extra == {"isrc": "XX1"}
    out = cli("catalog", "--catalog", cat, "reembed", "--model", m1, "--no-progress")
    assert "is current" in out.stdout
    out = cli("catalog", "--catalog", cat, "reembed", "--model", m1, "--no-progress", "--force")
    assert "re-embedded 2" in out.stdout and "forced" in out.stdout


def test_manifest_extra_over_the_cap_is_refused(
    setup: dict[str, Path], tmp_path: Path, cli: Callable[..., _Out]
) -> None:
    d = setup["dir"]
    man = tmp_path / "big.csv"
    man.write_text(f"id,path,notes\nBIG-1,{d / 'song0.wav'},{'n' * 5000}\n")
    out = cli("catalog", "--catalog", str(tmp_path / "c"), "add", "--manifest", str(man),
              "--model", str(d / "model1.pt"), "--no-progress", check=False)
    assert out.returncode == 2
    assert "BIG-1" in out.stderr and "4,096-byte limit" in out.stderr and "big.csv:2" in out.stderr
    assert not (tmp_path / "c").exists()  # refused before anything was embedded
