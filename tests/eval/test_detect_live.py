"""The live protocol's core (streamcover.eval.detect_live): the monitor's loop in live mode
recorded and replayed, piece scoring, the threshold sweep's counts, the operating point,
the confidence curve and the stream plans. Pure: a scripted searcher stands in for the
catalog (the real search is the upload protocol's, tested in test_detect.py)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from streamcover.config import AudioSettings, MatchSettings
from streamcover.eval.detect_live import (
    LiveCell,
    LiveResult,
    LiveStream,
    LiveWindow,
    Piece,
    Segment,
    choose,
    evaluate,
    live_curve,
    live_sweep,
    pack,
    replay_live,
    run_live_stream,
    score_pieces,
    segments_of,
    spread,
)

AUDIO = AudioSettings()
# The thresholds the scripted similarities below are written against (not the shipped ones).
MATCH = MatchSettings(live_threshold=0.79)
FPS = 2.0
HOP = AUDIO.hop_seconds


@dataclass
class _Hit:
    reference_id: str
    score: float
    alignment: list[tuple[float, float, float]]
    metadata: dict[str, Any] = field(default_factory=dict)


class _Scripted:
    """A searcher whose chunk similarities are given per chunk: ``sims[k] = {ref: sim}``."""

    def __init__(self, sims: list[dict[str, float]]) -> None:
        self.sims = sims
        self.queries: list[list[Any]] = []

    def search(self, vectors: np.ndarray, starts: np.ndarray, *, chunk_ids: list[Any],
               memo: Any = None, top_n: int = 10) -> list[_Hit]:
        self.queries.append(list(chunk_ids))
        refs = sorted({r for k in chunk_ids for r in self.sims[k]})
        hits = []
        for ref in refs:
            al = [(float(s), 5.0 * k, self.sims[k].get(ref, 0.0)) for k, s in zip(chunk_ids, starts, strict=True)]
            hits.append(_Hit(ref, float(np.mean([a[2] for a in al])), al))
        return sorted(hits, key=lambda h: -h.score)[:top_n]


def _stream(kind: str, n_chunks: int, pieces: tuple[Piece, ...] = ()) -> LiveStream:
    # n windows of 20 s every 10 s need (n + 1) * 10 s of features
    frames = round(((n_chunks + 1) * HOP) * FPS)
    return LiveStream(f"s-{kind}", kind, np.ones((12, frames), np.float32), FPS, pieces)


def _embed(chunks: np.ndarray) -> np.ndarray:
    return np.ones((chunks.shape[0], 4), np.float32) / 2.0


def _run(kind: str, sims: list[dict[str, float]], pieces: tuple[Piece, ...] = ()) -> tuple[LiveResult, _Scripted]:
    searcher = _Scripted(sims)
    res = run_live_stream(_stream(kind, len(sims), pieces), _embed, searcher, AUDIO, MATCH)  # type: ignore[arg-type]
    return res, searcher


# Negative: chunks 3-5 agree on "x" at 0.75 (one false segment at live thresholds up to 0.75).
NEG = [{"y": 0.2}] * 3 + [{"x": 0.75, "y": 0.2}] * 3 + [{"y": 0.3}] * 4
# A set: "a" (windows 0-5, sims 0.9), then "b" (windows 6-11, sims 0.8).
SET = [{"a": 0.9, "b": 0.1}] * 6 + [{"a": 0.1, "b": 0.8}] * 6
SET_PIECES = (Piece("a", 0.0, 70.0), Piece("b", 70.0, 130.0))


def test_query_is_the_live_horizon_and_the_records_replay_the_run() -> None:
    res, searcher = _run("set", SET, SET_PIECES)
    assert len(res.windows) == len(SET)
    h = MATCH.horizon_chunks
    assert searcher.queries[-1] == list(range(len(SET) - h, len(SET)))  # the newest horizon chunks
    assert [w.used for w in res.windows] == [min(k + 1, h) for k in range(len(SET))]
    again = [(d.kind, d.reference_id, round(d.score, 6)) for d in replay_live(res, MATCH, AUDIO)
             if d.kind in ("match", "setlist_segment")]
    assert again == [(k, r, round(s, 6)) for k, r, s, _, _ in res.events]
    assert [r for k, r, *_ in res.events if k == "setlist_segment"] == ["a", "b"]
    # through the records file's JSON, unchanged
    back = LiveResult.from_json(res.to_json())
    assert [(d.kind, d.reference_id) for d in replay_live(back, MATCH, AUDIO)] == \
        [(d.kind, d.reference_id) for d in replay_live(res, MATCH, AUDIO)]


def test_score_pieces_found_boundary_and_wrong() -> None:
    pieces = [Piece("a", 0.0, 100.0), Piece(None, 100.0, 130.0), Piece("b", 130.0, 200.0),
              Piece("c", 200.0, 260.0)]
    segs = [Segment("a", 15.0, 105.0, 0.8), Segment("z", 110.0, 125.0, 0.7),
            Segment("b", 140.0, 150.0, 0.75), Segment("b", 150.0, 195.0, 0.8),
            Segment("a", 210.0, 230.0, 0.7)]  # "a" again, where "c" plays: wrong
    out, wrong = score_pieces(pieces, segs)
    assert [o.found for o in out] == [True, True, False]
    assert (out[0].start_error, out[0].end_error) == (15.0, 5.0)
    assert (out[1].start_error, out[1].end_error) == (20.0, -5.0)  # the longest overlap
    assert math.isnan(out[2].start_error)
    assert wrong == 2


def _results() -> list[LiveResult]:
    neg, _ = _run("negative", NEG, (Piece(None, 0.0, 110.0),))
    pos, _ = _run("set", SET, SET_PIECES)
    return [neg, pos]


def test_sweep_counts_false_segments_per_hour_and_recall() -> None:
    results = _results()
    hours = results[0].seconds / 3600
    cells = live_sweep(results, [0.70, 0.75, 0.80, 0.85], [0.56, 0.78], MATCH, AUDIO)
    by = {(c.live_threshold, c.chunk_threshold): c for c in cells}
    assert (0.70, 0.78) not in by  # chunk threshold above the live one: not a valid setting
    assert by[(0.70, 0.56)].false_alarms == 1 and by[(0.75, 0.56)].false_alarms == 1
    assert by[(0.80, 0.56)].false_alarms == 0
    assert by[(0.70, 0.56)].fa_per_hour == pytest.approx(1 / hours)
    assert by[(0.80, 0.56)].recall == 1.0  # a at 0.9, b at 0.8
    assert by[(0.85, 0.56)].recall == 0.5  # b never reaches 0.85
    assert by[(0.80, 0.78)].recall == 1.0
    assert all(c.wrong_segments == 0 for c in cells)
    # one grid point is one evaluate(): the same replay
    at = MATCH.model_copy(update={"live_threshold": 0.75, "chunk_threshold": 0.56})
    assert evaluate(results, at, AUDIO) == by[(0.75, 0.56)]


def test_operating_point_is_the_best_recall_within_the_target() -> None:
    results = _results()
    cells = live_sweep(results, [0.70, 0.75, 0.80, 0.85], [0.56], MATCH, AUDIO)
    hours = results[0].seconds / 3600
    point = choose(cells, 0.5 / hours)  # allows no false alarm
    assert point is not None and point.false_alarms == 0 and point.recall == 1.0
    assert point.live_threshold == 0.80
    assert choose(cells, 2 / hours) is not None  # the 0.70 cell is within it now: same recall
    assert choose([c for c in cells if c.false_alarms], 0.5 / hours) is None


def test_curve_is_the_measured_rate_non_increasing() -> None:
    def cell(lt: float, fa: int) -> LiveCell:
        return LiveCell(lt, 0.56, fa, fa / 2.0, 10, 5, 0, 1.0)

    cells = [cell(0.60, 5), cell(0.65, 2), cell(0.70, 3), cell(0.75, 0), cell(0.80, 0)]
    scores, rates = live_curve(cells, 0.56)
    assert list(scores) == [0.60, 0.65, 0.70, 0.75, 0.80]
    assert list(rates) == [2.5, 1.5, 1.5, 0.0, 0.0]  # 0.65 takes the 3 measured at 0.70
    with pytest.raises(ValueError):
        live_curve(cells, 0.50)


def test_segments_of_takes_closed_segments() -> None:
    res, _ = _run("set", SET, SET_PIECES)
    segs = segments_of(replay_live(res, MATCH, AUDIO))
    assert [s.ref for s in segs] == ["a", "b"]
    assert segs[0].start == 0.0 and segs[-1].end == pytest.approx(res.seconds)
    assert 60.0 <= segs[0].end <= 80.0  # the change, within a window of the truth (70 s)


def test_pack_and_spread() -> None:
    assert pack([10, 20, 40, 5, 5], 30) == [[0, 1], [2], [3, 4]]
    assert pack([], 30) == []
    refs = ["a", "a", "b", "b", "c", "c"]
    order = spread(refs, np.random.default_rng(3))
    assert sorted(order) == list(range(6))
    assert all(refs[i] != refs[j] for i, j in itertools.pairwise(order))
    assert order == spread(refs, np.random.default_rng(3))  # deterministic in the seed


def test_window_round_trip_keeps_missing_similarities() -> None:
    r = LiveResult("s", "set", 30.0, [Piece("a", 0.0, 30.0, "rec")],
                   [LiveWindow(0.0, 20.0, 1, [("a", 0.8, [5.0], [math.nan])])], [])
    back = LiveResult.from_json(r.to_json())
    assert math.isnan(back.windows[0].hits[0][3][0]) and back.pieces == r.pieces
