"""Decision rules of StreamMatcher, driven by search results shaped like catalog SearchHits.

The hits here are synthetic inputs to a pure function (what a search *would* return for a
known timeline): they test the rules (thresholds, hysteresis, segmentation, ids), not a model.
The end-to-end tests in tests/consumers/ run the real encoder and catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest

from streamcover.config import MatchSettings
from streamcover.match.decision import Decision, StreamMatcher

WIN, HOP = 20.0, 10.0


@dataclass(frozen=True)
class FakeHit:
    reference_id: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    alignment: list[tuple[float, float, float]] = field(default_factory=list)


def timeline_sim(songs: list[tuple[str, float, float]], start: float, ref: str) -> float:
    """Similarity of the window [start, start+WIN] to ``ref``: the share of it that plays ref."""
    overlap = sum(max(0.0, min(e, start + WIN) - max(s, start)) for r, s, e in songs if r == ref)
    return 0.15 + 0.8 * overlap / WIN


def run(matcher: StreamMatcher, songs: list[tuple[str, float, float]], end: float) -> list[Decision]:
    refs = sorted({r for r, _, _ in songs})
    out: list[Decision] = []
    i = 0
    while i * HOP + WIN <= end:
        matcher.add_chunk(i, i * HOP, i * HOP + WIN)
        out += matcher.on_window(i, i * HOP, i * HOP + WIN, window_hits(songs, refs, matcher))
        i += 1
    out += matcher.finish(end)
    return out


def window_hits(songs: list[tuple[str, float, float]], refs: list[str], matcher: StreamMatcher) -> list[FakeHit]:
    q = [idx * HOP for idx in matcher.query_indices()]
    hits = []
    for ref in refs:
        align = [(s, max(0.0, s - _song_start(songs, ref)), timeline_sim(songs, s, ref)) for s in q]
        score = sum(a[2] for a in align) / len(align)
        hits.append(FakeHit(ref, score, {"title": ref.upper()}, align))
    hits.sort(key=lambda h: -h.score)
    return hits


def _song_start(songs: list[tuple[str, float, float]], ref: str) -> float:
    return min(s for r, s, _ in songs if r == ref)


def settings(**kw: Any) -> MatchSettings:
    base: dict[str, Any] = dict(threshold=0.6, release_threshold=0.45, min_chunks=1, horizon_chunks=6)
    base.update(kw)
    base.setdefault("one_chunk_threshold", base["threshold"])
    return MatchSettings(**base)


def test_a_one_chunk_query_needs_the_one_chunk_threshold() -> None:
    s = settings(threshold=0.7, one_chunk_threshold=0.9, release_threshold=0.5)
    m = StreamMatcher("u1", "upload", s, WIN, HOP)
    m.add_chunk(0, 0, 20)
    assert m.on_window(0, 0, 20, [FakeHit("a", 0.8, {}, [(0.0, 0.0, 0.8)])]) == []
    m.add_chunk(1, HOP, HOP + 20)
    out = m.on_window(1, HOP, HOP + 20, [FakeHit("a", 0.8, {}, [(0.0, 0.0, 0.8), (HOP, HOP, 0.8)])])
    assert [(d.kind, d.reference_id, d.chunks_used) for d in out] == [("match", "a", 2)]
    short = StreamMatcher("u2", "upload", s, WIN, HOP)
    short.add_chunk(0, 0, 12)
    out = short.on_window(0, 0, 12, [FakeHit("a", 0.91, {}, [(0.0, 0.0, 0.91)])])
    assert [d.kind for d in out] == ["match"]


def test_upload_cover_gets_match_then_final() -> None:
    m = StreamMatcher("u1", "upload", settings(), WIN, HOP)
    out = run(m, [("a", 0.0, 60.0)], 60.0)
    kinds = [d.kind for d in out]
    assert kinds[0] == "match" and kinds[-1] == "final"
    assert out[0].reference_id == "a" and out[0].window_index == 0
    assert out[-1].reference_id == "a" and out[-1].score >= 0.6
    assert out[-1].reference == {"title": "A"}


def test_unrelated_upload_gets_only_a_negative_final() -> None:
    m = StreamMatcher("u2", "upload", settings(), WIN, HOP)
    out = run(m, [("a", 500.0, 600.0)], 60.0)  # "a" never plays: every sim stays at baseline
    assert [d.kind for d in out] == ["final"]
    assert out[0].reference_id is None


def test_min_chunks_delays_the_match() -> None:
    m = StreamMatcher("u3", "upload", settings(min_chunks=3), WIN, HOP)
    out = run(m, [("a", 0.0, 80.0)], 80.0)
    first = next(d for d in out if d.kind == "match")
    assert first.window_index == 2 and first.chunks_used == 3


def test_hysteresis_keeps_match_between_release_and_threshold() -> None:
    s = settings(threshold=0.7, release_threshold=0.4)
    m = StreamMatcher("u4", "upload", s, WIN, HOP)
    m.add_chunk(0, 0, 20)
    out = m.on_window(0, 0, 20, [FakeHit("a", 0.8, {}, [(0.0, 0.0, 0.8)])])
    assert [d.kind for d in out] == ["match"]
    m.add_chunk(1, 10, 30)
    # falls under the threshold but stays above release: no new match, still open
    out = m.on_window(1, 10, 30, [FakeHit("a", 0.5, {}, [(0.0, 0.0, 0.8), (10.0, 10.0, 0.2)])])
    assert out == []
    assert m.matches["a"].open
    m.add_chunk(2, 20, 40)
    out = m.on_window(2, 20, 40, [FakeHit("a", 0.3, {}, [(20.0, 20.0, 0.1)])])
    assert not m.matches["a"].open
    # coming back above the threshold is a fresh match event with a different id
    m.add_chunk(3, 30, 50)
    out = m.on_window(3, 30, 50, [FakeHit("a", 0.75, {}, [(30.0, 30.0, 0.75)])])
    assert [d.kind for d in out] == ["match"]


def test_update_when_score_grows() -> None:
    s = settings(threshold=0.6, update_min_delta=0.05, update_min_span_s=1000)
    m = StreamMatcher("u5", "upload", s, WIN, HOP)
    seq = [0.62, 0.64, 0.70, 0.71, 0.80]
    kinds = []
    for i, sc in enumerate(seq):
        m.add_chunk(i, i * HOP, i * HOP + WIN)
        kinds += [d.kind for d in m.on_window(i, i * HOP, i * HOP + WIN, [FakeHit("a", sc, {}, [(i * HOP, i * HOP, sc)])])]
    assert kinds == ["match", "update", "update"]


def test_live_three_songs_set_list_boundaries_within_one_hop() -> None:
    songs = [("a", 0.0, 95.0), ("b", 95.0, 183.0), ("c", 183.0, 280.0)]
    m = StreamMatcher("live1", "live", settings(), WIN, HOP)
    out = run(m, songs, 280.0)
    segs = [d for d in out if d.kind == "setlist_segment"]
    assert [d.reference_id for d in segs] == ["a", "b", "c"]
    for d, (_, s, e) in zip(segs, songs, strict=True):
        assert abs(d.stream_span[0] - s) <= HOP, (d.stream_span, s)
        assert abs(d.stream_span[1] - e) <= HOP, (d.stream_span, e)
    final = out[-1]
    assert final.kind == "setlist"
    assert [i.reference_id for i in final.setlist] == ["a", "b", "c"]
    assert [d.kind for d in out if d.kind == "match"] == ["match"] * 3


@pytest.mark.parametrize("need", [1, 2])
def test_a_live_segment_needs_live_min_chunks_agreeing_chunks(need: int) -> None:
    """One chunk that agrees with a reference by chance opens no segment at the default of
    two; a song does, from its second chunk, with its start kept at the first."""
    m = StreamMatcher("live-min", "live", settings(live_min_chunks=need, live_threshold=0.7,
                                                   chunk_threshold=0.5), WIN, HOP)
    decisions = []
    sims = [0.9, 0.2, 0.2, 0.9, 0.9, 0.9]  # each chunk's similarity to "a"
    for i in range(len(sims)):
        m.add_chunk(i, i * HOP, i * HOP + WIN)
        align = [(k * HOP, 0.0, sims[k]) for k in m.query_indices()]
        score = sum(a[2] for a in align) / len(align)
        decisions += m.on_window(i, i * HOP, i * HOP + WIN, [FakeHit("a", score, {}, align)])
    opened = [d for d in decisions if d.kind == "match"]
    if need == 1:
        assert opened and opened[0].window_index == 0
    else:
        assert len(opened) == 1 and opened[0].window_index == 4
        # the boundary sits midway through chunks 2 and 3 overlap, not at the second chunk
        assert opened[0].stream_span[0] == pytest.approx(3 * HOP + HOP / 2)


def test_live_gap_between_songs_closes_segment() -> None:
    songs = [("a", 0.0, 80.0), ("b", 140.0, 240.0)]  # a minute of talk in between
    m = StreamMatcher("live2", "live", settings(), WIN, HOP)
    out = run(m, songs, 240.0)
    segs = [d for d in out if d.kind == "setlist_segment"]
    assert [d.reference_id for d in segs] == ["a", "b"]
    assert abs(segs[0].stream_span[1] - 80.0) <= HOP
    assert abs(segs[1].stream_span[0] - 140.0) <= HOP


def test_event_ids_are_deterministic_and_distinct() -> None:
    songs = [("a", 0.0, 95.0), ("b", 95.0, 183.0), ("c", 183.0, 280.0)]
    a = run(StreamMatcher("live1", "live", settings(), WIN, HOP), songs, 280.0)
    b = run(StreamMatcher("live1", "live", settings(), WIN, HOP), songs, 280.0)
    assert [d.event_id for d in a] == [d.event_id for d in b]
    assert len({d.event_id for d in a}) == len(a)
    c = run(StreamMatcher("live-other", "live", settings(), WIN, HOP), songs, 280.0)
    assert not {d.event_id for d in a} & {d.event_id for d in c}


@pytest.mark.parametrize("cut", [3, 9, 17])
def test_checkpoint_restore_mid_stream_gives_identical_decisions(cut: int) -> None:
    songs = [("a", 0.0, 95.0), ("b", 95.0, 183.0), ("c", 183.0, 280.0)]
    whole = run(StreamMatcher("s", "live", settings(), WIN, HOP), songs, 280.0)

    # replay the same windows, but snapshot/restore (through msgpack) after `cut` windows
    first = StreamMatcher("s", "live", settings(), WIN, HOP)
    events: list[Decision] = []
    refs = ["a", "b", "c"]
    m = first
    i = 0
    while i * HOP + WIN <= 280.0:
        if i == cut:
            blob = msgpack.packb(m.to_state(), use_bin_type=True)
            m = StreamMatcher.from_state(msgpack.unpackb(blob), "s", "live", settings(), WIN, HOP)
        m.add_chunk(i, i * HOP, i * HOP + WIN)
        events += m.on_window(i, i * HOP, i * HOP + WIN, window_hits(songs, refs, m))
        i += 1
    events += m.finish(280.0)
    assert [(d.event_id, d.kind) for d in events] == [(d.event_id, d.kind) for d in whole]


def test_short_upload_single_window_still_gets_verdict() -> None:
    m = StreamMatcher("short", "upload", settings(), WIN, HOP)
    m.add_chunk(0, 0.0, 8.0)
    out = m.on_window(0, 0.0, 8.0, [FakeHit("a", 0.9, {}, [(0.0, 30.0, 0.9)])])
    out += m.finish(8.0)
    assert [d.kind for d in out] == ["match", "final"]
    assert out[0].reference_span == (30.0, 50.0)
    assert out[-1].stream_span == (0.0, 8.0)


def _many_songs(n: int, length: float = 100.0) -> list[tuple[str, float, float]]:
    return [(f"r{i:03d}", i * length, (i + 1) * length) for i in range(n)]


def test_live_set_list_is_bounded_and_counts_what_it_dropped() -> None:
    songs = _many_songs(12)
    end = songs[-1][2]
    m = StreamMatcher("days", "live", settings(setlist_max_entries=4), WIN, HOP)
    out = run(m, songs, end)
    segs = [d for d in out if d.kind == "setlist_segment"]
    assert [d.reference_id for d in segs] == [r for r, _, _ in songs]  # every segment emitted
    assert len(m.closed) == 4 and m.closed_omitted == 8
    final = out[-1]
    assert final.kind == "setlist" and final.setlist_omitted == 8
    assert [i.reference_id for i in final.setlist] == [r for r, _, _ in songs[-4:]]
    # The same stream unbounded lists everything and omits nothing.
    whole = run(StreamMatcher("days", "live", settings(), WIN, HOP), songs, end)[-1]
    assert whole.setlist_omitted == 0 and len(whole.setlist) == 12
    assert whole.setlist[-4:] == final.setlist


def test_bounded_set_list_survives_a_checkpoint() -> None:
    songs = _many_songs(8)
    m = StreamMatcher("s", "live", settings(setlist_max_entries=3), WIN, HOP)
    run(m, songs[:6], songs[5][2])
    blob = msgpack.packb(m.to_state(), use_bin_type=True)
    back = StreamMatcher.from_state(msgpack.unpackb(blob), "s", "live", settings(setlist_max_entries=3), WIN, HOP)
    assert back.closed_omitted == m.closed_omitted == 3 and back.closed == m.closed
    # A checkpoint written with a larger bound is cut to the current one on restore.
    small = StreamMatcher.from_state(msgpack.unpackb(blob), "s", "live", settings(setlist_max_entries=1), WIN, HOP)
    assert len(small.closed) == 1 and small.closed_omitted == 5
    assert small.setlist(99).setlist_omitted == 5


def test_upload_keeps_a_bounded_number_of_released_matches() -> None:
    m = StreamMatcher("u-long", "upload", settings(threshold=0.7, release_threshold=0.4), WIN, HOP)
    for i in range(200):  # a new reference matches, then is released, every two windows
        ref = f"r{i // 2}"
        sc = 0.8 if i % 2 == 0 else 0.1
        m.add_chunk(i, i * HOP, i * HOP + WIN)
        m.on_window(i, i * HOP, i * HOP + WIN, [FakeHit(ref, sc, {}, [(i * HOP, 0.0, sc)])])
    assert 0 < len(m.matches) <= 33
    assert all(not o.open for o in m.matches.values())
    assert "r99" in m.matches and "r0" not in m.matches  # the oldest went first
