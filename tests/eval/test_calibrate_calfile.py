"""The calibration file's two parts: `streamcover calibrate --live` writes only the ``live``
section (every other key kept), and the upload run keeps an existing ``live`` section when it
rewrites the file. Pure merges first, then both commands on recorded streams (no search)."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from streamcover.cli import build_parser
from streamcover.commands.calibrate import write_records
from streamcover.commands.calibrate.calfile import keep_live, read_doc, with_live
from streamcover.config import AudioSettings, MatchSettings
from streamcover.eval.detect import StreamResult
from streamcover.eval.detect_live import LiveResult, LiveWindow, Piece, replay_live
from streamcover.match.calibration import CALIBRATION_FORMAT, Calibration

UPLOAD = {"format": CALIBRATION_FORMAT, "model_id": "m", "curve": {"score": [0.0, 1.0]},
          "operating_point": {"threshold": 0.6}, "sweep": [1, 2], "other": {"kept": True}}
LIVE = {"model_id": "m", "curve": {"score": [0.7]}, "operating_point": {"live_threshold": 0.7}}


def test_with_live_sets_only_the_live_section() -> None:
    out = with_live({**UPLOAD, "live": {"model_id": "m", "old": 1}}, LIVE)
    assert out == {**UPLOAD, "live": LIVE}
    fresh = with_live(None, LIVE)
    assert fresh == {"format": CALIBRATION_FORMAT, "model_id": "m", "live": LIVE}
    with pytest.raises(ValueError, match="for model 'other'"):
        with_live({**UPLOAD, "model_id": "other"}, LIVE)


def test_keep_live_keeps_the_same_models_section() -> None:
    new = {**UPLOAD, "sweep": [3]}
    assert keep_live({**UPLOAD, "live": LIVE}, new) == {**new, "live": LIVE}
    assert keep_live(None, new) == new
    assert "live" not in keep_live({**UPLOAD, "live": {**LIVE, "model_id": "old-model"}}, new)


def _windows(n: int, ref: str | None, sim: float) -> list[LiveWindow]:
    out = []
    for k in range(n):
        used = min(k + 1, 6)
        hits = [] if ref is None else [(ref, sim, [5.0 * k] * used, [sim] * used)]
        out.append(LiveWindow(10.0 * k, 10.0 * k + 20.0, used, hits))
    return out


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import streamcover.commands.common as common

    monkeypatch.setattr(common, "cli_encoder", lambda path: types.SimpleNamespace(model_id="m"))
    monkeypatch.setenv("COLUMNS", "200")

    def go(*argv: str) -> int:
        args = build_parser().parse_args(["calibrate", *argv, "--no-progress"])
        threads = torch.get_num_threads()
        try:
            return int(args.handler(args))
        finally:
            torch.set_num_threads(threads)

    return go


def test_both_commands_keep_the_others_part(tmp_path: Path, run: Any) -> None:
    out = tmp_path / "cal.json"
    # the live run on records: a negative hour with one weak chunk run, a set with one piece
    live_records = tmp_path / "live.json.gz"
    neg = LiveResult("n", "negative", 3600.0, [Piece(None, 0.0, 3600.0, "rec")],
                     _windows(30, None, 0.0) + _windows(33, "x", 0.6)[30:])
    pos = LiveResult("s", "set", 130.0, [Piece("a", 0.0, 130.0, "a")], _windows(12, "a", 0.9))
    for r in (neg, pos):  # what the run itself (at the default thresholds) decided
        r.events = [(d.kind, d.reference_id, d.score, *d.stream_span)
                    for d in replay_live(r, MatchSettings(), AudioSettings())
                    if d.kind in ("match", "setlist_segment")]
    write_records(live_records, [neg, pos], {"protocol": "live",
                                             "run_live_threshold": MatchSettings().live_threshold,
                                             "run_chunk_threshold": MatchSettings().chunk_threshold})
    out.write_text(json.dumps({**UPLOAD, "data": {"negative_hours": 2.0},
                               "curve": {"score": [0.0, 1.0], "fa_per_hour": [1.0, 0.0]}}))
    assert run("--live", "--records", str(live_records), "--out", str(out)) == 0
    doc = read_doc(out)
    assert doc is not None
    assert doc["other"] == {"kept": True} and doc["sweep"] == [1, 2]  # the upload part, untouched
    live = doc["live"]
    op = live["operating_point"]
    assert op["reached"] and op["false_alarms"] == 0 and op["recall"] == 1.0
    assert op["live_threshold"] > 0.6  # above the negative's 0.6 run
    assert op["verified"]["run_disagreements"] == 0
    cal = Calibration.from_dict(doc)
    assert cal.live is not None and cal.live.false_alarms_per_hour(0.6) == pytest.approx(1.0)
    assert cal.live.at_floor(op["live_threshold"])
    # the upload run rewrites the file and keeps the live section
    records = tmp_path / "records.json.gz"
    r = StreamResult("n1", "negative", "x", "full", None, 3600.0, [1, 2], [[("x", 0.3)], [("x", 0.3)]],
                     [float("nan")] * 2)
    p = StreamResult("a", "reupload", "debian", "full", "a", 60.0, [1, 2], [[("a", 0.8)], [("a", 0.9)]],
                     [0.8, 0.9])
    write_records(records, [r, p], {"model_id": "m"})
    assert run("--records", str(records), "--out", str(out), "--plot", str(tmp_path / "det.png")) == 0
    after = read_doc(out)
    assert after is not None and after["live"] == live and "other" not in after
    assert after["operating_point"]["threshold"] != 0.6
