"""`streamcover calibrate`'s report: the table and the DET plot mark the operating point the
calibration file holds (the decision rule's, a one-chunk threshold for one-chunk queries and
``match.threshold`` from two chunks on), not the one-threshold sweep's row at ``threshold``.

The records are synthetic window scores shaped so the two differ: unrelated music reaches a
high score only on one-chunk queries, and one positive is seen only by a one-chunk query.
"""

from __future__ import annotations

import json
import math
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from streamcover.cli import build_parser
from streamcover.commands.calibrate import write_records
from streamcover.eval.detect import StreamResult


def _result(stream_id: str, kind: str, true_ref: str | None, length: str,
            tops: list[tuple[str, float]], seconds: float) -> StreamResult:
    """One stream whose k-th window (k from 0) had a query of k + 1 chunks."""
    r = StreamResult(stream_id, kind, "x", length, true_ref, seconds)
    for k, (ref, score) in enumerate(tops):
        r.used.append(k + 1)
        r.top.append([(ref, score)])
        r.true_score.append(score if ref == true_ref else math.nan)
    return r


RESULTS = [
    # one hour of unrelated music: high wrong scores on one-chunk queries only
    _result("n1", "negative", None, "full", [("x", 0.9), ("y", 0.30)], 1800.0),
    _result("n2", "negative", None, "full", [("x", 0.5), ("y", 0.35)], 1800.0),
    # found only by its one-chunk query (a short upload), and one found from two chunks on
    _result("a#10", "reupload", "a", "10", [("a", 0.8)], 10.0),
    _result("b#full", "reupload", "b", "full", [("b", 0.6), ("b", 0.7)], 120.0),
]


@pytest.fixture
def calibrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
               ) -> tuple[dict[str, Any], list[str], Any]:
    """Run the command on recorded streams: (calibration file, report lines, DET figure)."""
    import matplotlib.pyplot as plt

    import streamcover.commands.common as common

    records = tmp_path / "records.json.gz"
    write_records(records, RESULTS, {"model_id": "test-model"})
    # Re-sweeping records searches nothing: the encoder only names the default records file.
    monkeypatch.setattr(common, "cli_encoder", lambda path: types.SimpleNamespace(model_id="m"))
    monkeypatch.setenv("COLUMNS", "200")
    figures: list[Any] = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    out, plot = tmp_path / "cal.json", tmp_path / "det.png"
    args = build_parser().parse_args(["calibrate", "--records", str(records), "--out", str(out), "--floor", "0,0",
                                      "--plot", str(plot), "--no-progress"])
    threads = torch.get_num_threads()
    try:
        assert args.handler(args) == 0
    finally:
        torch.set_num_threads(threads)
    assert plot.stat().st_size > 0
    return json.loads(out.read_text()), capsys.readouterr().out.splitlines(), figures[-1]


def test_the_operating_point_is_the_decision_rules(calibrated: tuple) -> None:
    doc, _, _ = calibrated
    op = doc["operating_point"]
    # two or more chunks: the lowest threshold above both negatives' 0.30 / 0.35; one chunk:
    # the lowest above the 0.9 one negative reached
    assert (op["threshold"], op["one_chunk_threshold"]) == (0.355, 0.905)
    assert (op["false_alarms"], op["wrong_reference_events"]) == (0, 0)
    assert op["recall"] == {"reupload/10": 0.0, "reupload/full": 1.0}
    # the one-threshold sweep at 0.355 is another point: both negatives alarm, both found
    row = next(r for r in doc["sweep"] if r["threshold"] == 0.36)
    assert row["false_alarms"] == 2 and row["recall"] == {"reupload/10": 1.0, "reupload/full": 1.0}


def test_the_table_marks_the_files_operating_point(calibrated: tuple) -> None:
    doc, lines, _ = calibrated
    op = doc["operating_point"]
    marked = [line for line in lines if "*" in line and "│" in line]
    assert len(marked) == 1, lines
    cells = [c.strip() for c in marked[0].strip().strip("│").split("│")]
    assert cells == [f"* {op['one_chunk_threshold']:.3f} / {op['threshold']:.3f}",
                     str(op["false_alarms"]), f"{op['fa_per_hour']:.3f}",
                     str(op["wrong_reference_events"]),
                     *[f"{op['recall'][c]:.3f}" for c in sorted(op["recall"])]]


def test_the_det_plot_marks_the_files_operating_point(calibrated: tuple) -> None:
    doc, _, fig = calibrated
    op = doc["operating_point"]
    ax = fig.axes[0]
    stars = {line.get_color(): (float(line.get_xdata()[0]), float(line.get_ydata()[0]))
             for line in ax.get_lines() if line.get_marker() == "*" and len(line.get_xdata())}
    curves = {line.get_label().split(" ")[0]: line.get_color() for line in ax.get_lines()
              if line.get_marker() != "*" and "(n=" in str(line.get_label())}
    assert sorted(curves) == sorted(op["recall"])
    floor = 0.5 / doc["data"]["negative_hours"]  # zero false alarms are drawn at half the floor
    for cls, color in curves.items():
        assert stars[color] == pytest.approx((max(op["fa_per_hour"], floor), 1 - op["recall"][cls]))
    assert f"{op['one_chunk_threshold']:.3f} (one chunk) / {op['threshold']:.3f}" in ax.get_title()
