"""Offline (`streamcover identify`) and streaming (the monitor's pipeline) give the same
verdict on the same real recording, with every stage on: the shipped model, the reference
grid, stored features, stage-3 alignment and the default (calibrated) threshold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import structlog
from monitor_harness import reference_events

from streamcover.audio.decode import load_audio
from streamcover.cli import main
from streamcover.config import Settings
from streamcover.monitor.engine import build_engine

WIRE = 22_050
CATALOGUED = ("menu_enhanced.opus", "track22.opus", "track8.opus")
UNCATALOGUED = "track3.opus"
EXCERPT = (33.0, 63.0)  # 30 s, off the reference grid


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, debian_music: list[Path]) -> Iterator[dict]:
    by_name = {p.name: p for p in debian_music}
    missing = [n for n in (*CATALOGUED, UNCATALOGUED) if n not in by_name]
    if missing:
        pytest.fail(f"tracks {missing} not found in the Debian music")
    root = tmp_path_factory.mktemp("offline-streaming")
    catalog = root / "catalog"
    rc = main(["catalog", "--catalog", str(catalog), "add", *[str(by_name[n]) for n in CATALOGUED],
               "--no-progress"])
    assert rc == 0
    clips = {}
    for name in (CATALOGUED[1], UNCATALOGUED):
        wave = load_audio(by_name[name], WIRE)[int(EXCERPT[0] * WIRE) : int(EXCERPT[1] * WIRE)]
        path = root / f"clip-{Path(name).stem}.flac"
        sf.write(path, wave, WIRE)
        clips[name] = (path, wave)
    yield {"catalog": catalog, "clips": clips}
    structlog.reset_defaults()  # main() points structlog at the captured stream


def _offline(capsys: pytest.CaptureFixture[str], catalog: Path, clip: Path) -> dict:
    capsys.readouterr()
    assert main(["identify", str(clip), "--catalog", str(catalog), "--json"]) == 0
    hits: list[dict] = json.loads(capsys.readouterr().out)
    return hits[0]


def _streaming(catalog: Path, sid: str, wave: np.ndarray) -> list:
    settings = Settings(catalog={"path": catalog}, audio={"wire_sample_rate": WIRE})  # type: ignore[arg-type]
    engine = build_engine(settings)
    return [e for e in reference_events(settings, engine, {sid: (wave, "upload")})
            if e.kind == "final"]


@pytest.mark.slow
def test_a_catalogued_recording_matches_offline_and_streaming(
        world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    clip, wave = world["clips"][CATALOGUED[1]]
    off = _offline(capsys, world["catalog"], clip)
    assert off["match"] is True, off
    assert off["alignment_score"] is not None  # stage 3 ran
    (final,) = _streaming(world["catalog"], "copy", wave)
    assert final.reference_id == off["reference_id"]
    assert final.reference["title"] == Path(CATALOGUED[1]).stem
    assert final.score >= final.threshold
    assert final.alignment_score is not None and final.maxmean is not None
    # same chunks and features up to the wire resampling: the scores agree closely
    assert final.score == pytest.approx(off["score"], abs=0.03)
    assert final.maxmean == pytest.approx(off["maxmean"], abs=0.03)


@pytest.mark.slow
def test_an_uncatalogued_recording_matches_neither_way(
        world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    clip, wave = world["clips"][UNCATALOGUED]
    off = _offline(capsys, world["catalog"], clip)
    assert off["match"] is False, off
    (final,) = _streaming(world["catalog"], "other", wave)
    assert final.reference_id is None
    assert final.score < final.threshold
