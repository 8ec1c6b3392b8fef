"""The monitor's processing core without Kafka: real front end, real (untrained) encoder,
real catalog and faiss index. Fast checks of windowing, checkpoint/restore exactness and
bad-input outcomes; the Kafka paths are in test_monitor_e2e.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from monitor_harness import frames_of
from monitor_world import WIRE_RATE, World

from consumers.engine import build_engine
from consumers.pipeline import InRecord, Pipeline
from streamcover.events import AudioFrame, MatchEvent, StreamState, decode_any, encode


@pytest.fixture(scope="module")
def engine(world: World) -> Any:
    return build_engine(world.settings)


def _records(world: World, streams: dict[str, tuple[np.ndarray, Any]]) -> list[InRecord]:
    """Interleave the streams' frames on one partition, as a shared topic would."""
    per = {sid: frames_of(world.settings, sid, w, src) for sid, (w, src) in streams.items()}
    out: list[InRecord] = []
    i = 0
    while any(per.values()):
        for sid, frames in per.items():
            if frames:
                out.append(InRecord("audio", 0, len(out), sid.encode(), frames.pop(0), 0))
        i += 1
    return out


def _key(e: MatchEvent) -> tuple[str, str, str | None, float, float]:
    return (e.event_id, e.kind, e.reference_id, round(e.stream_span.start, 3), round(e.stream_span.end, 3))


@pytest.mark.parametrize("cut", [37, 190])
def test_restore_from_checkpoint_reproduces_uninterrupted_run(world: World, engine: Any, cut: int) -> None:
    streams = {
        "up": (world.copy_of("work-1", 50.0), "upload"),
        "live": (np.concatenate([world.copy_of("work-0", 51.08), world.copy_of("work-2", 51.08)]), "live"),
    }
    recs = _records(world, streams)
    whole = Pipeline(world.settings, engine).process(recs).events

    first = Pipeline(world.settings, engine)
    out1 = first.process(recs[:cut])
    # a crash now: a new instance restores from the checkpoints written so far ...
    second = Pipeline(world.settings, engine)
    for partition, key, value in out1.states:
        second.load_state(partition, key, value)
    resume = out1.offsets[0]
    assert resume <= cut
    # ... and re-reads from the committed offset
    out2 = second.process(recs[resume:])
    got = out1.events + out2.events
    assert [_key(e) for e in got] == [_key(e) for e in whole]
    for a, b in zip(got, whole, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-5)


def test_batched_features_decide_as_record_by_record(world: World, engine: Any) -> None:
    """A batch's features are computed for all streams in one front-end call at its end.
    That must decide exactly what transforming each record on arrival decides, in the same
    order, and give each window the send time of the frame that completed it (latency)."""
    import time

    streams = {
        "up": (world.copy_of("work-1", 41.3), "upload"),
        "live": (np.concatenate([world.copy_of("work-0", 51.08), world.copy_of("work-2", 30.0)]), "live"),
        "short": (world.copy_of("work-2", 23.7), "upload"),
    }
    t0 = time.time() - 3600.0
    recs = []
    for r in _records(world, streams):
        f = decode_any(r.value)
        assert isinstance(f, AudioFrame)
        sent = t0 + f.seq * 0.5 + 0.01 * sorted(streams).index(f.stream_id)
        recs.append(InRecord(r.topic, r.partition, r.offset, r.key, encode(f.model_copy(update={"sent_at": sent})), 0))
    one = Pipeline(world.settings, engine)
    alone = [e for r in recs for e in one.process([r]).events]
    many = Pipeline(world.settings, engine)
    batched = [e for b in range(0, len(recs), 57) for e in many.process(recs[b : b + 57]).events]
    assert len(alone) >= 10 and {e.kind for e in alone} >= {"match", "final"}
    assert [_key(e) for e in batched] == [_key(e) for e in alone]
    for a, b in zip(batched, alone, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-6)
        closed_a, closed_b = a.emitted_at - a.latency_ms / 1000, b.emitted_at - b.latency_ms / 1000
        assert closed_a == pytest.approx(closed_b, abs=1e-3)
        if b.kind in ("match", "update"):
            assert closed_b > t0 + 19.0  # a frame's send time, not the processing time


def test_checkpoint_is_small_and_valid(world: World, engine: Any) -> None:
    recs = _records(world, {"live": (world.copy_of("work-0", 60.0), "live")})
    out = Pipeline(world.settings, engine).process(recs[:-1])  # no eos yet
    states = [decode_any(v) for _, k, v in out.states if not k.startswith("__mark__")]
    assert len(states) == 1 and isinstance(states[0], StreamState)
    st = states[0]
    assert st.stream_id == "live" and not st.finished and st.next_window >= 4
    assert st.embedding_matrix().shape == (len(st.chunk_index), 512)
    assert st.feature_matrix().shape[0] == 12
    assert max(len(v) for _, _, v in out.states) < 64_000


def test_eviction_finishes_idle_stream(world: World, engine: Any) -> None:
    s = world.settings.model_copy(update={"monitor": world.settings.monitor.model_copy(update={"idle_evict_seconds": 1.0})})
    pipe = Pipeline(s, engine)
    recs = _records(world, {"idle": (world.copy_of("work-1", 30.0), "upload")})
    first = pipe.process(recs[:-1])
    assert "final" not in [e.kind for e in first.events] and "idle" in pipe.streams
    import time

    time.sleep(1.1)
    out = pipe.process([])
    assert [e.kind for e in out.events] == ["final"]
    assert "idle" not in pipe.streams
    assert pipe.metrics.evicted._value.get() == 1


def test_stream_cap_rejects_new_streams_with_metric(world: World, engine: Any) -> None:
    s = world.settings.model_copy(update={"monitor": world.settings.monitor.model_copy(update={"max_streams": 1})})
    pipe = Pipeline(s, engine)
    recs = _records(world, {"a": (world.copy_of("work-1", 5.0), "upload"), "b": (world.copy_of("work-2", 5.0), "upload")})
    pipe.process(recs[:4])
    assert set(pipe.streams) == {"a"}
    assert pipe.metrics.streams_rejected._value.get() == 1
    assert pipe.metrics.stream_cap_hit._value.get() == 1


def test_replayed_dead_letters_are_not_repeated(world: World, engine: Any) -> None:
    pipe = Pipeline(world.settings, engine)
    bad = InRecord("audio", 0, 0, b"x", b"\xc1junk", 0)
    out = pipe.process([bad])
    assert [d.reason for d in out.dead_letters] == ["malformed"]
    again = Pipeline(world.settings, engine)
    for p, k, v in out.states:
        again.load_state(p, k, v)
    assert again.process([bad]).dead_letters == []


def test_frames_on_wire_are_decodable(world: World) -> None:
    frames = frames_of(world.settings, "s", np.zeros(WIRE_RATE, dtype=np.float32), "upload")
    decoded = [decode_any(f) for f in frames]
    assert all(isinstance(f, AudioFrame) for f in decoded)
    assert decoded[-1].eos and encode(decoded[0]) == frames[0]




def test_setlist_on_demand_and_unknown_stream(world: World, engine: Any) -> None:
    import time

    from streamcover.events import SetListRequest

    pipe = Pipeline(world.settings, engine)
    live = np.concatenate([world.copy_of("work-0", 51.08), world.copy_of("work-2", 30.65)])
    recs = _records(world, {"gig": (live, "live")})[:-1]  # still playing
    pipe.process(recs)
    ask = InRecord("audio", 0, len(recs), b"gig", encode(SetListRequest(stream_id="gig", request_id="r1", sent_at=time.time())), 0)
    nobody = InRecord("audio", 0, len(recs) + 1, b"nobody",
                      encode(SetListRequest(stream_id="nobody", request_id="r2", sent_at=time.time())), 0)
    out = pipe.process([ask, nobody])
    [ev] = out.events
    assert ev.kind == "setlist" and [i.reference_id for i in ev.setlist] == ["work-0", "work-2"]
    assert ev.setlist[-1].stream_span.end > ev.setlist[-1].stream_span.start
    assert [d.reason for d in out.dead_letters] == ["unknown_stream"]
