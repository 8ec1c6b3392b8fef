"""Events carry the calibrated confidence of their kind: upload decisions the upload curve,
live set-list decisions the live curve (None where the file has none, as before)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from streamcover.config import MatchSettings
from streamcover.match.calibration import Calibration
from streamcover.match.decision import Decision
from streamcover.monitor.engine import Engine
from streamcover.monitor.match_events import match_event
from streamcover.monitor.metrics import Metrics


def _curve(scores: list[float], rates: list[float], hours: float, **kw: object) -> Calibration:
    return Calibration("m", np.array(scores), np.array(rates), hours, **kw)  # type: ignore[arg-type]


UPLOAD = _curve([0.0, 0.5, 0.9, 1.0], [3.0, 1.0, 0.2, 0.0], 5.0)
LIVE = _curve([0.6, 0.7, 0.8, 1.0], [0.5, 0.3, 0.0, 0.0], 10.0, threshold=0.8)


def _engine(cal: Calibration | None) -> Engine:
    return Engine(frontend=None, encoder=types.SimpleNamespace(model_id="m"), searcher=None,  # type: ignore[arg-type]
                  fixed_catalog_version="1", calibration=cal)


def _decision(kind: str, source: str, score: float, ref: str | None = "r") -> Decision:
    return Decision(kind=kind, event_id="e", stream_id="s", source=source, reference_id=ref,  # type: ignore[arg-type]
                    reference={}, score=score, chunks_used=3, stream_span=(0.0, 30.0),
                    reference_span=None, window_index=2)


def _event(d: Decision, cal: Calibration | None) -> tuple[float | None, bool]:
    ev = match_event(d, None, _engine(cal), MatchSettings(), Metrics())
    return ev.false_alarms_per_hour, ev.false_alarms_at_floor


@pytest.mark.parametrize("kind", ["match", "update", "setlist_segment"])
def test_live_events_take_the_live_curve(kind: str) -> None:
    cal = Calibration("m", UPLOAD.scores, UPLOAD.fa_per_hour, 5.0, live=LIVE)
    assert _event(_decision(kind, "live", 0.65), cal) == (pytest.approx(0.3), False)
    assert _event(_decision(kind, "live", 0.85), cal) == (pytest.approx(0.1), True)  # 1 per 10 h
    # an upload decision at the same score reads the upload curve
    assert _event(_decision(kind if kind != "setlist_segment" else "match", "upload", 0.65), cal) == \
        (pytest.approx(0.2), False)


def test_live_events_without_a_live_curve_carry_none() -> None:
    assert _event(_decision("setlist_segment", "live", 0.9), UPLOAD) == (None, False)
    assert _event(_decision("match", "live", 0.9), None) == (None, False)
    cal = Calibration("m", UPLOAD.scores, UPLOAD.fa_per_hour, 5.0, live=LIVE)
    assert _event(_decision("setlist", "live", 0.0, ref=None), cal) == (None, False)
