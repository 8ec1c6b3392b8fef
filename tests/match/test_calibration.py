"""The calibrated-confidence lookup: the measured step, monotone, floored where nothing was measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamcover.config import PROJECT_ROOT
from streamcover.match.calibration import (
    CALIBRATION_FORMAT,
    Calibration,
    CalibrationError,
    curve_points,
    default_path,
)

BEST = [0.21, 0.25, 0.25, 0.30, 0.33, 0.41]  # each negative stream's best top score
HOURS = 3.0


def _cal() -> Calibration:
    s, f = curve_points(BEST, HOURS)
    return Calibration("m", s, f, HOURS, threshold=0.42, release_threshold=0.336)


def test_curve_counts_streams_reaching_each_score() -> None:
    s, f = curve_points(BEST, HOURS)
    assert s[0] == 0.0 and s[-1] == 1.0
    for score, rate in zip(s, f, strict=True):
        assert rate == pytest.approx(sum(b >= score for b in BEST) / HOURS)
    assert np.all(np.diff(f) <= 0)


def test_lookup_is_the_measured_step() -> None:
    cal = _cal()
    grid = np.linspace(-0.2, 1.0, 241)
    rates = [cal.false_alarms_per_hour(float(x)) for x in grid]
    assert np.all(np.diff(rates) <= 1e-12)
    # at any score: the negatives whose best reached it, per hour (what a count at that
    # threshold says), so between two measured points the upper one's rate
    for x in grid:
        assert cal.false_alarms_per_hour(float(x)) == pytest.approx(
            max(sum(b >= x for b in BEST) / HOURS, cal.floor))
    assert cal.false_alarms_per_hour(0.30) == pytest.approx(3 / HOURS)
    assert cal.false_alarms_per_hour(0.315) == pytest.approx(2 / HOURS)
    assert cal.false_alarms_per_hour(-0.5) == pytest.approx(len(BEST) / HOURS)


def test_floor_where_no_negative_reached_the_score() -> None:
    cal = _cal()
    assert cal.floor == pytest.approx(1 / HOURS)
    assert not cal.at_floor(0.41)  # one stream reached it: measured
    assert cal.false_alarms_per_hour(0.41) == pytest.approx(1 / HOURS)
    for s in (0.45, 0.7, 0.99):
        assert cal.at_floor(s)
        assert cal.false_alarms_per_hour(s) == pytest.approx(cal.floor)
        assert cal.describe(s) == "< 1 per 3.0 h measured"
    assert "false alarms/h" in cal.describe(0.3)
    with pytest.raises(ValueError):
        cal.false_alarms_per_hour(float("nan"))


def test_file_round_trip_and_model_check(tmp_path: Path) -> None:
    s, f = curve_points(BEST, HOURS)
    doc = {"format": CALIBRATION_FORMAT, "model_id": "m", "data": {"negative_hours": HOURS},
           "curve": {"score": s.tolist(), "fa_per_hour": f.tolist()},
           "operating_point": {"threshold": 0.42, "release_threshold": 0.336}}
    p = tmp_path / "x.calibration.json"
    p.write_text(json.dumps(doc))
    cal = Calibration.load(p, model_id="m")
    assert cal.threshold == 0.42 and cal.false_alarms_per_hour(0.3) == pytest.approx(1.0)
    with pytest.raises(CalibrationError, match=r"is for model"):
        Calibration.load(p, model_id="other")
    p.write_text(json.dumps({**doc, "format": "nope"}))
    with pytest.raises(CalibrationError):
        Calibration.load(p)
    bad = {**doc, "curve": {"score": [0.0, 0.5, 1.0], "fa_per_hour": [1.0, 2.0, 0.0]}}
    p.write_text(json.dumps(bad))
    with pytest.raises(CalibrationError, match="grow"):
        Calibration.load(p)
    with pytest.raises(CalibrationError, match="cannot read"):
        Calibration.load(tmp_path / "missing.json")


def test_default_path_and_shipped_file() -> None:
    model = PROJECT_ROOT / "models" / "streamcover-hpcp-compact.pt"
    path = default_path(model)
    assert path.name == "streamcover-hpcp-compact.calibration.json"
    if path.is_file():  # the shipped calibration reads and is consistent
        cal = Calibration.load(path)
        assert cal.threshold is not None and 0 < cal.threshold < 1
        assert cal.false_alarms_per_hour(cal.threshold) <= 0.1 + 1e-9 or cal.at_floor(cal.threshold)


def test_the_defaults_are_the_shipped_operating_points() -> None:
    """config.py's thresholds are the ones the shipped calibration chose (uploads and live)."""
    import json

    from streamcover.config import MatchSettings

    path = default_path(PROJECT_ROOT / "models" / "streamcover-hpcp-compact.pt")
    doc = json.loads(path.read_text())
    m = MatchSettings()
    op = doc["operating_point"]
    assert (op["one_chunk_threshold"], op["threshold"], op["release_threshold"]) == (
        m.one_chunk_threshold, m.threshold, m.release_threshold)
    live = doc["live"]["operating_point"]
    assert (live["live_threshold"], live["chunk_threshold"]) == (m.live_threshold, m.chunk_threshold)
    speeds = doc["scoring"]["reference_speeds"]
    from streamcover.config import CatalogSettings

    assert tuple(speeds) == CatalogSettings().reference_speeds


def test_scores_equal_at_the_files_precision_are_one_point() -> None:
    """Two negatives 1e-12 apart (fused-score round-off) would be two points that the file,
    written at 5 places, shows as equal: the curve merges them and stays strictly ascending."""
    s, f = curve_points([0.0106, 0.0106 + 1e-12, 0.5], 2.0)
    assert np.all(np.diff(s) > 0) and np.all(np.round(s, 5) == s)
    assert list(f) == [1.5, 1.5, 0.5, 0.0]


def _doc(live: dict | None = None) -> dict:
    s, f = curve_points(BEST, HOURS)
    doc = {"format": CALIBRATION_FORMAT, "model_id": "m", "data": {"negative_hours": HOURS},
           "curve": {"score": s.tolist(), "fa_per_hour": f.tolist()},
           "operating_point": {"threshold": 0.42, "release_threshold": 0.336}}
    if live is not None:
        doc["live"] = live
    return doc


LIVE = {"model_id": "m", "data": {"negative_hours": 10.0},
        "curve": {"chunk_threshold": 0.56, "score": [0.60, 0.70, 0.80, 1.0],
                  "fa_per_hour": [0.5, 0.2, 0.0, 0.0]},
        "operating_point": {"live_threshold": 0.80, "chunk_threshold": 0.56}}


def test_live_curve_is_loaded_and_used_for_live_decisions() -> None:
    cal = Calibration.from_dict(_doc(LIVE))
    assert cal.live is not None and cal.live.threshold == 0.80
    assert cal.live.floor == pytest.approx(0.1)
    assert cal.for_decision("live", 3) is cal.live
    assert cal.for_decision("upload", 3) is cal
    assert cal.live.false_alarms_per_hour(0.65) == pytest.approx(0.2)  # the next measured point up
    assert cal.live.false_alarms_per_hour(0.55) == pytest.approx(0.5)
    assert cal.live.at_floor(0.85) and cal.live.false_alarms_per_hour(0.85) == pytest.approx(0.1)
    # the upload curve is untouched by the live section
    assert cal.false_alarms_per_hour(0.3) == pytest.approx(Calibration.from_dict(_doc()).false_alarms_per_hour(0.3))


def test_files_without_a_live_curve_load_as_before() -> None:
    assert Calibration.from_dict(_doc()).live is None
    assert Calibration.from_dict(_doc()).for_decision("live", 2) is None
    not_reached = {**LIVE, "curve": {}, "operating_point": {"reached": False}}
    assert Calibration.from_dict(_doc(not_reached)).live is None
    with pytest.raises(CalibrationError, match="live calibration is for model"):
        Calibration.from_dict(_doc({**LIVE, "model_id": "other"}))
