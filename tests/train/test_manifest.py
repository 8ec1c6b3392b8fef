from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from train_helpers import TINY_ENCODER

from streamcover.audio.frontend import make_frontend
from streamcover.config import FrontEndSettings
from streamcover.data.shs import ShsData
from streamcover.data.tracks import TrackSet
from streamcover.train.manifest import (
    ManifestError,
    compute_features,
    manifest_tracks,
    read_manifest,
)

SR = 22_050


def _melody(path: Path, notes: list[int], seconds: float = 8.0) -> Path:
    """A sine melody (MIDI notes) written as a real WAV file."""
    per = int(seconds * SR / len(notes))
    t = np.arange(per) / SR
    wave = np.concatenate([0.3 * np.sin(2 * np.pi * 440 * 2 ** ((n - 69) / 12) * t)
                           for n in notes]).astype(np.float32)
    sf.write(path, wave, SR)
    return path


def test_csv_and_jsonl_parse_with_optional_columns(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "work,path,title,artist,start,end\n"
        "w1,a.wav,Song,Someone,1.5,20\n"
        "w1,/abs/b.wav,,,,\n")
    rows = read_manifest(tmp_path / "m.csv")
    assert rows[0].work == "w1" and rows[0].path == tmp_path.resolve() / "a.wav"
    assert (rows[0].start, rows[0].end, rows[0].title) == (1.5, 20.0, "Song")
    assert rows[1].path == Path("/abs/b.wav") and rows[1].end is None
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"work": 7, "path": "a.wav", "start": 2}) + "\n\n"
        + json.dumps({"work": "x", "path": "c.wav"}) + "\n")
    rows = read_manifest(tmp_path / "m.jsonl")
    assert [r.work for r in rows] == ["7", "x"] and rows[0].start == 2.0


@pytest.mark.parametrize(("text", "match"), [
    ("work,path\nw1,\n", r"m.csv:2: missing path"),
    ("work,path,start\nw1,a.wav,soon\n", r"m.csv:2: start must be seconds"),
    ("work,path,start,end\nw1,a.wav,5,3\n", r"m.csv:2: end \(3.0\) must be after"),
    ("work,path,genre\nw1,a.wav,rock\n", r"unknown columns \['genre'\]"),
    ("work,path\n", r"no recordings"),
])
def test_malformed_manifests_name_the_line(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ManifestError, match=match):
        read_manifest(tmp_path / "m.csv")


def test_bad_suffix_and_bad_json(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ManifestError, match=r"csv or \.jsonl"):
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "m.jsonl").write_text("{not json}\n")
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: not JSON"):
        read_manifest(tmp_path / "m.jsonl")


def test_features_through_the_frontend_are_cached_and_bad_audio_is_reported(
        tmp_path: Path) -> None:
    _melody(tmp_path / "a1.wav", [60, 64, 67, 72])
    _melody(tmp_path / "a2.wav", [62, 66, 69, 74])  # the same tune, a tone higher
    _melody(tmp_path / "b1.wav", [60, 61, 60, 61])
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really audio")
    (tmp_path / "m.csv").write_text(
        "work,path,start,end\nA,a1.wav,,\nA,a2.wav,,\nB,b1.wav,2,6\nB,broken.wav,,\n")
    cache = tmp_path / "cache"
    entries = read_manifest(tmp_path / "m.csv")
    tracks = manifest_tracks(entries, "hpcp", cache_dir=cache)
    assert len(tracks) == 3  # the undecodable file is skipped (and logged), not fatal
    assert tracks.n_bins == 12 and tracks.frames_per_second == pytest.approx(2.1533, abs=1e-3)
    assert tracks.n_frames(0) == pytest.approx(8 * 2.1533, abs=2)
    assert tracks.n_frames(2) == pytest.approx(4 * 2.1533, abs=1.5)  # start/end honoured
    assert tracks.works[0] == tracks.works[1] != tracks.works[2]
    # C major arpeggio: pitch classes C, E, G dominate (bin 0 = A, so C = 3, E = 7, G = 10)
    profile = tracks.feature(0).mean(axis=1)
    assert set(np.argsort(profile)[-3:].tolist()) == {3, 7, 10}
    cached = sorted((cache / "hpcp").glob("*.npy"))
    assert len(cached) == 3
    again = manifest_tracks(entries, "hpcp", cache_dir=cache)
    np.testing.assert_array_equal(again.feature(1), tracks.feature(1))
    with pytest.raises(ManifestError, match="none of the 1"):
        manifest_tracks([entries[3]], "hpcp", cache_dir=cache)


def test_feature_cache_survives_concurrent_writers_and_corrupt_entries(tmp_path: Path) -> None:
    """Two evaluations sharing a cache once lost a recording: both wrote the same fixed
    temporary name and the slower rename failed. Each writer now renames its own file."""
    from concurrent.futures import ThreadPoolExecutor

    _melody(tmp_path / "a.wav", [60, 64, 67, 72])
    (tmp_path / "m.csv").write_text("work,path\nA,a.wav\n")
    entry = read_manifest(tmp_path / "m.csv")[0]
    fe = make_frontend(FrontEndSettings(name="hpcp"))
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(4) as pool:
        feats = list(pool.map(lambda _: compute_features(entry, fe, cache), range(8)))
    for f in feats[1:]:
        np.testing.assert_array_equal(f, feats[0])
    files = sorted(p.name for p in (cache / "hpcp").iterdir())
    assert len(files) == 1 and files[0].endswith(".npy")  # no temporary file left behind
    # A corrupt cache entry is recomputed and replaced, not returned or fatal.
    (cache / "hpcp" / files[0]).write_bytes(b"\x93NUMPY garbage")
    np.testing.assert_array_equal(compute_features(entry, fe, cache), feats[0])
    np.testing.assert_array_equal(np.load(cache / "hpcp" / files[0]), feats[0])


def _two_work_manifest(tmp_path: Path) -> Path:
    """Two works, two versions each (the second transposed), as real WAV files."""
    rows = ["work,path"]
    for w, theme in enumerate(([60, 64, 67, 72, 67, 64], [62, 65, 69, 65, 62, 57])):
        for v, shift in enumerate((0, 3)):
            p = _melody(tmp_path / f"w{w}v{v}.wav", [n + shift for n in theme], seconds=25.0)
            rows.append(f"song{w},{p.name}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "m.csv"


def test_shs_and_manifest_recordings_combine(shs_real_slice: ShsData, tmp_path: Path) -> None:
    """The corpus rendered to HPCP and the SHS HPCP file train together."""
    shs = shs_real_slice.tracks.select_works(np.unique(shs_real_slice.tracks.works)[:3])
    man = manifest_tracks(read_manifest(_two_work_manifest(tmp_path)), "hpcp",
                          cache_dir=tmp_path / "cache")
    both = TrackSet.concat([shs, man])
    assert len(both) == len(shs) + len(man) and both.n_works == shs.n_works + 2
    assert set(both.works[: len(shs)]).isdisjoint(both.works[len(shs):])
    # SHS rows untouched; manifest rows stored as SHS stores them (uint8, time-major).
    np.testing.assert_array_equal(both.feature(0), shs.feature(0))
    assert both.features[len(shs)].dtype == np.uint8 and both.time_major
    np.testing.assert_allclose(both.feature(len(shs)), man.feature(0), atol=shs.scale / 2 + 1e-6)
    slow = TrackSet(man.features, man.works, man.track_ids, man.frames_per_second / 2)
    with pytest.raises(ValueError, match="frames/s"):
        TrackSet.concat([shs, slow])


def test_train_command_takes_shs_and_manifest(shs_real_slice: ShsData, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from streamcover.cli import main
    from streamcover.data.shs import DEFAULT_SHS_PATH

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({
        "name": "mixed", "frontend": "hpcp", "encoder_overrides": TINY_ENCODER, "threads": 1,
        "max_steps": 1, "val_every_steps": 1, "device": "cpu", "val_max_works": 3,
        "data": {"works_per_batch": 3, "versions_per_work": 2, "full_max_chunks": 2}}))
    rc = main(["train", "--shs", str(DEFAULT_SHS_PATH), "--limit-works", "24",
               "--split", str(tmp_path / "split.json"), "--manifest",
               str(_two_work_manifest(tmp_path)), "--config", str(cfg),
               "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    # The SHS train split (about 80 % of 24 works) plus the manifest's 2 works.
    n_works = int(out.split("recordings of ")[1].split(" works")[0])
    split = json.loads((tmp_path / "split.json").read_text())
    assert n_works == len(split["train"]) + 2
    assert (tmp_path / "runs" / "mixed" / "last.pt").exists()
