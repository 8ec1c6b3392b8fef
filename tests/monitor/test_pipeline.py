"""The monitor's processing core without Kafka: real front end, real (untrained) encoder,
real catalog and faiss index. Fast checks of windowing, checkpoint/restore exactness and
bad-input outcomes; the Kafka paths are in tests/consumers/test_monitor_e2e.py. One file: the
tests share the module's world and engine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from monitor_harness import frames_of
from monitor_world import WIRE_RATE, World

from streamcover.audio.frontend import FeatureStream
from streamcover.events import AudioFrame, MatchEvent, StreamState, decode_any, encode
from streamcover.monitor.engine import build_engine
from streamcover.monitor.pipeline import InRecord, Pipeline


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


def test_restore_continues_the_tuning_fold(world: World, engine: Any) -> None:
    """An upload played 3 % slow sits half a semitone off the HPCP grid: its checkpoints carry
    the fold's shifted phase and recent spreads, and a restored stream's features continue bit
    for bit as an uninterrupted run's."""
    from streamcover.audio.speed import change_speed

    slow = change_speed(world.copy_of("work-1", 60.0), 0.97)
    recs = _records(world, {"slow": (slow, "upload")})
    cut, stop = len(recs) // 2, 2 * len(recs) // 3  # less than the fold's 20 s memory apart

    def last_state(out: Any) -> StreamState:
        states = [decode_any(v) for _, _, v in out.states]
        return [st for st in states if isinstance(st, StreamState)][-1]

    whole = last_state(Pipeline(world.settings, engine).process(recs[:stop]))
    out1 = Pipeline(world.settings, engine).process(recs[:cut])
    assert last_state(out1).tuning_phase == 1 and last_state(out1).tuning_recent
    second = Pipeline(world.settings, engine)
    for partition, key, value in out1.states:
        second.load_state(partition, key, value)
    resumed = last_state(second.process(recs[out1.offsets[0]:stop]))
    assert resumed.frames_done == whole.frames_done > last_state(out1).frames_done
    assert resumed.tuning_recent == whole.tuning_recent
    assert resumed.query_features == whole.query_features
    assert resumed.feature_tail == whole.feature_tail


def test_batched_features_decide_as_record_by_record(world: World, engine: Any) -> None:
    """A batch's features are computed for all streams in one front-end call at its end.
    That must decide exactly what transforming each record on arrival decides, in the same
    order, and give each window the send time of the frame that completed it (latency)."""
    import time

    streams = {
        "up": (world.copy_of("work-1", 41.3), "upload"),
        # the second song is long enough for live_min_chunks (2) agreeing chunks
        "live": (np.concatenate([world.copy_of("work-0", 51.08), world.copy_of("work-2", 41.0)]), "live"),
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
    assert len(alone) >= 8 and {e.kind for e in alone} >= {"match", "final"}
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
    states = [decode_any(v) for _, k, v in out.states if not k.startswith("__mark__") and v is not None]
    assert len(states) == 1 and isinstance(states[0], StreamState)
    st = states[0]
    assert st.stream_id == "live" and not st.finished and st.next_window >= 4
    assert st.embedding_matrix().shape == (len(st.chunk_index), 512)
    assert st.feature_matrix().shape[0] == 12
    assert max(len(v or b"") for _, _, v in out.states) < 64_000


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
    assert isinstance(decoded[-1], AudioFrame) and decoded[-1].eos and encode(decoded[0]) == frames[0]




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


# ---- hostile input and faults (docs/monitor.md "Fault tolerance") ------------------------------

def _frame(sid: str, seq: int, start: int, n: int = 11_025, rate: int = WIRE_RATE, eos: bool = False,
           fill: float = 0.1) -> bytes:
    return encode(AudioFrame.from_samples(np.full(n, fill, dtype=np.float32), stream_id=sid, seq=seq,
                                          start_sample=start, sample_rate=rate, source="upload", eos=eos))


def _renumber(recs: list[InRecord], ts_ms: int = 0) -> list[InRecord]:
    return [InRecord("audio", 0, i, r.key, r.value, ts_ms) for i, r in enumerate(recs)]


def _ends(events: list[MatchEvent], sid: str) -> list[MatchEvent]:
    return [e for e in events if e.stream_id == sid and e.kind == "final"]


def test_probe_huge_start_sample_is_dead_lettered_and_the_next_upload_ends(world: World, engine: Any) -> None:
    """The issue's probe: a normal frame, then seq 1 at start_sample 10**13 (36 TiB of
    'silence' before), then a normal 30 s upload."""
    import tracemalloc

    probe = [InRecord("audio", 0, 0, b"probe", _frame("probe", 0, 0), 0),
             InRecord("audio", 0, 1, b"probe", _frame("probe", 1, 10**13), 0)]
    normal = _records(world, {"normal": (world.copy_of("work-1", 30.0), "upload")})
    recs = _renumber(probe + normal)
    pipe = Pipeline(world.settings, engine)
    tracemalloc.start()
    out = pipe.process(recs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(d.reason, d.offset) for d in out.dead_letters] == [("implausible_position", 1)]
    assert len(_ends(out.events, "normal")) == 1
    assert [e.reference_id for e in out.events if e.kind == "match"] == ["work-1"]
    assert peak < 200e6, peak
    assert out.offsets[0] <= len(recs) and "probe" in pipe.streams  # the probe stream is still open


def test_gap_beyond_max_gap_seconds_restarts_instead_of_silence(world: World, engine: Any) -> None:
    import tracemalloc

    pipe = Pipeline(world.settings, engine)
    step = 11_025
    far = 40 * step  # 20 s, > audio.max_gap_seconds, behind consecutive seq numbers
    # seq 1 is lost (its hole is filled once the reorder buffer gives up on it), then seq 7
    # starts 20 s late: the windowing restarts there instead
    frames = [_frame("g", 0, 0)] + [_frame("g", q, q * step) for q in range(2, 7)]
    frames.append(_frame("g", 7, 7 * step + far))
    pipe.process(_renumber([InRecord("a", 0, 0, b"g", f, 0) for f in frames]))
    assert pipe.metrics.frames_converted.labels("gap_silence")._value.get() == 1
    assert pipe.metrics.frames_dropped.labels("gap_restart")._value.get() == 1
    assert pipe.streams["g"].grid_origin == 7 * step + far
    # a seq jump of 10**7 on an end-of-stream frame: bounded memory, one final
    tracemalloc.start()
    out = pipe.process([InRecord("a", 0, 7, b"g", _frame("g", 10**7, 8 * step + far, eos=True), 0)])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6, peak
    assert len(_ends(out.events, "g")) == 1


def test_unsupported_sample_rate_is_dead_lettered(world: World, engine: Any) -> None:
    pipe = Pipeline(world.settings, engine)
    recs = _renumber([InRecord("a", 0, 0, b"odd", _frame("odd", 0, 0, rate=191_999), 0),
                      InRecord("a", 0, 0, b"ok", _frame("ok", 0, 0, n=24_000, rate=48_000), 0)])
    out = pipe.process(recs)
    assert [d.reason for d in out.dead_letters] == ["unsupported_rate"]
    assert "191999" in out.dead_letters[0].detail
    assert set(pipe.streams) == {"ok"} and pipe.streams["ok"].sample_rate == 48_000


class _Exploding(FeatureStream):
    """A feature stream whose next push fails (a fault inside the batched front end)."""

    def _accept(self, samples: np.ndarray) -> Any:
        raise FloatingPointError("injected front-end fault")


def _three(world: World) -> list[InRecord]:
    return _records(world, {"a": (world.copy_of("work-1", 45.0), "upload"),
                            "bad": (world.copy_of("work-2", 45.0), "upload"),
                            "c": (world.copy_of("work-0", 45.0), "live")})


def _without(events: list[MatchEvent], sid: str) -> list[tuple[str, str, str | None, float, float]]:
    return [_key(e) for e in events if e.stream_id != sid]


def _inject_and_run(world: World, engine: Any, inject: Any) -> tuple[Pipeline, list[Any], list[InRecord]]:
    recs = _three(world)
    pipe = Pipeline(world.settings, engine)
    outs = [pipe.process(recs[:30])]
    inject(pipe.streams["bad"])
    outs += [pipe.process(recs[b : b + 40]) for b in range(30, len(recs), 40)]
    return pipe, outs, recs


@pytest.mark.parametrize("phase", ["features", "windows", "decision", "record"])
def test_a_fault_in_one_stream_ends_it_and_spares_the_others(world: World, engine: Any, phase: str) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError(f"injected {phase} fault")

    def inject(rt: Any) -> None:
        if phase == "features":
            rt.fstream.__class__ = _Exploding
        elif phase == "windows":
            rt.absorb = boom
        elif phase == "decision":
            rt.matcher.on_window = boom
        else:
            rt.seq.push = boom

    whole = Pipeline(world.settings, engine).process(_three(world)).events
    pipe, outs, recs = _inject_and_run(world, engine, inject)
    events = [e for o in outs for e in o.events]
    dead = [d for o in outs for d in o.dead_letters]
    assert len(dead) == 1 and dead[0].reason == "processing_error" and "injected" in dead[0].detail
    assert dead[0].key == b"bad" and dead[0].offset >= 30
    # the others decide exactly what they decide without the fault
    assert _without(events, "bad") == _without(whole, "bad")
    assert len(_ends(events, "bad")) == 1  # the failed stream is closed with a final
    assert pipe.streams == {} and outs[-1].offsets[0] == len(recs)
    # a crash right after the faulty batch: the replay from its commit neither fails again
    # nor loses or repeats an event
    k = next(i for i, o in enumerate(outs) if o.dead_letters)
    again = Pipeline(world.settings, engine)
    for o in outs[: k + 1]:
        for p, key, v in o.states:
            again.load_state(p, key, v)
    replay = again.process(recs[outs[k].offsets[0] :])
    assert replay.dead_letters == []
    before = [e for o in outs[: k + 1] for e in o.events]
    assert sorted(_key(e) for e in before + replay.events) == sorted(_key(e) for e in events)


def test_a_failing_encoder_batch_is_retried_window_by_window(world: World, engine: Any) -> None:
    import dataclasses

    class OnlySingles:
        """Returns non-finite vectors for batches of more than one window."""

        def __init__(self, real: Any) -> None:
            self.real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def embed_chunks(self, batch: np.ndarray) -> np.ndarray:
            emb = np.asarray(self.real.embed_chunks(batch), dtype=np.float32)
            return emb if len(batch) == 1 else emb * np.nan

    flaky = dataclasses.replace(engine, encoder=OnlySingles(engine.encoder))
    recs = _three(world)
    want = Pipeline(world.settings, engine).process(recs)
    got = Pipeline(world.settings, flaky).process(recs)
    assert got.dead_letters == [] and [_key(e) for e in got.events] == [_key(e) for e in want.events]


def test_finished_streams_are_tombstoned_once_the_offset_passes(world: World, engine: Any) -> None:
    recs = _records(world, {"short": (world.copy_of("work-2", 8.0), "upload"),
                            "long": (world.copy_of("work-1", 40.0), "upload")})
    pipe = Pipeline(world.settings, engine)
    end_short = max(r.offset for r in recs if r.key == b"short")
    first = pipe.process(recs[: end_short + 1])
    states = {k: v for _, k, v in first.states if v is not None}
    short = decode_any(states["short"])
    assert isinstance(short, StreamState) and short.finished
    assert first.offsets[0] <= end_short  # "long" holds the offset back: no tombstone yet
    assert "short" in pipe.closing
    rest = pipe.process(recs[end_short + 1 :])
    tomb = [k for _, k, v in rest.states if v is None]
    assert sorted(tomb) == ["long", "short"] and pipe.closing == {}
    # after the tombstones a restart holds nothing of them
    again = Pipeline(world.settings, engine)
    for o in (first, rest):
        for p, k, v in o.states:
            again.load_state(p, k, v)
    assert again.restored == {} and again.closing == {}


def test_orphaned_checkpoint_is_finished_by_record_time_and_releases_the_offset(world: World, engine: Any) -> None:
    import time

    recs = _records(world, {"orphan": (world.copy_of("work-1", 40.0), "upload")})
    first = Pipeline(world.settings, engine).process(recs[:50])  # no end of stream
    held = first.offsets[0]
    assert held < 50
    idle = world.settings.monitor.idle_evict_seconds
    # the checkpoint was written idle + 30 s before the partition's newest record
    for i, (p, k, v) in enumerate(first.states):
        st = decode_any(v) if v is not None else None
        if isinstance(st, StreamState):
            old = st.model_copy(update={"updated_at": st.updated_at - idle - 30})
            first.states[i] = (p, k, encode(old))
    later_ms = int(time.time() * 1000)
    other = [InRecord("audio", 0, 50 + i, r.key, r.value, later_ms)
             for i, r in enumerate(_records(world, {"other": (world.copy_of("work-0", 6.0), "upload")}))]
    for ts in (0, later_ms):
        second = Pipeline(world.settings, engine)
        for p, k, v in first.states:
            second.load_state(p, k, v)
        recs2 = [InRecord(r.topic, r.partition, r.offset, r.key, r.value, ts) for r in other[:3]]
        out = second.process(recs2)
        if ts == 0:  # no record time, wall clock not quiet yet: the checkpoint still waits
            assert "orphan" in second.restored and out.offsets[0] == held
            continue
        assert "orphan" not in second.restored
        assert [e.kind for e in out.events if e.stream_id == "orphan"] == ["final"]
        assert out.offsets[0] == 50 > held  # released (up to the new stream's first record)
        assert ("orphan" in [k for _, k, v in out.states if v is None])
    # a quiet partition: the wall clock alone, idle_evict_seconds after the state was read
    quiet = Pipeline(world.settings, engine)
    for p, k, v in first.states:
        quiet.load_state(p, k, v)
    assert quiet.process([], now=time.time() + 1).events == []
    out = quiet.process([], now=time.time() + idle + 1)
    assert [e.kind for e in out.events] == ["final"] and quiet.restored == {}


def test_ten_thousand_finished_states_load_small_and_are_tombstoned(world: World, engine: Any) -> None:
    import time
    import tracemalloc

    recs = _records(world, {"done": (world.copy_of("work-1", 25.0), "upload")})
    [st] = [decode_any(v) for _, k, v in Pipeline(world.settings, engine).process(recs).states
            if k == "done" and v is not None]
    assert isinstance(st, StreamState) and st.finished and st.chunk_index
    values = [encode(st.model_copy(update={"stream_id": f"done-{i}", "resume_offset": i}))
              for i in range(10_000)]
    pipe = Pipeline(world.settings, engine)
    tracemalloc.start()
    t0 = time.perf_counter()
    for i, v in enumerate(values):
        pipe.load_state(0, f"done-{i}", v)
    seconds = time.perf_counter() - t0
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(pipe.closing) == 10_000 and pipe.restored == {}
    assert kept < 8e6, kept  # ~three integers per finished stream, not its embeddings
    assert seconds < 30, seconds
    out = pipe.process([InRecord("audio", 0, 10_000, b"x", b"\xc1", 0)])
    assert sum(1 for _, _, v in out.states if v is None) == 10_000 and pipe.closing == {}


def test_a_checkpoint_that_does_not_fit_ends_its_stream_not_the_batch(world: World, engine: Any) -> None:
    """A restored state whose feature tail has the wrong number of bins (another front end,
    a hand-edited record) fails when new features are appended: that stream is closed with
    a dead letter and a final, the other stream of the batch decides as usual."""
    recs = _records(world, {"s": (world.copy_of("work-1", 40.0), "upload")})
    first = Pipeline(world.settings, engine).process(recs[:50])
    pipe = Pipeline(world.settings, engine)
    for p, k, v in first.states:
        st = decode_any(v) if v is not None else None
        if isinstance(st, StreamState):
            tail = st.feature_matrix()
            v = encode(st.model_copy(update={"feature_bins": 4, "feature_tail": tail[:4].astype("<f4").tobytes()}))
        pipe.load_state(p, k, v)
    other = _records(world, {"o": (world.copy_of("work-0", 25.0), "upload")})
    rest = [InRecord("audio", 0, first.offsets[0] + i, r.key, r.value, 0)
            for i, r in enumerate(recs[first.offsets[0] :] + other)]
    out = pipe.process(rest)
    assert [d.reason for d in out.dead_letters] == ["processing_error"]
    assert out.dead_letters[0].key == b"s" and "size 4" in out.dead_letters[0].detail
    assert len(_ends(out.events, "s")) == 1 and len(_ends(out.events, "o")) == 1
    want = Pipeline(world.settings, engine).process(_renumber(other)).events
    assert [_key(e) for e in out.events if e.stream_id == "o"] == [_key(e) for e in want]


def test_load_state_itself_skips_a_state_record_that_cannot_be_decoded(
    world: World, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A corrupt checkpoint must not stop every start: ``load_state`` skips it with a warning
    (whatever the decoder raises) instead of raising to its caller; that stream starts
    afresh and the readable checkpoints load as usual."""
    import msgpack
    from structlog.testing import capture_logs

    from streamcover.monitor import checkpoints

    recs = _records(world, {"kept": (world.copy_of("work-1", 40.0), "upload"),
                            "lost": (world.copy_of("work-0", 40.0), "upload")})
    first = Pipeline(world.settings, engine).process(recs[:100])  # a window each, no end
    lost = [v for _, k, v in first.states if k == "lost"][-1]
    assert lost is not None and any(k == "kept" for _, k, _ in first.states)
    real = checkpoints.decode_any

    def decoder_bug(data: bytes) -> Any:
        if data == b"boom":
            raise RecursionError("maximum recursion depth exceeded")
        return real(data)

    monkeypatch.setattr(checkpoints, "decode_any", decoder_bug)
    corrupt = [b"\xc1\xff not msgpack", lost[: len(lost) // 2],
               msgpack.packb({"v": 99, "type": "stream_state"}), b"boom"]
    pipe = Pipeline(world.settings, engine)
    with capture_logs() as logs:
        for p, k, v in first.states:
            for value in corrupt if k == "lost" else [v]:
                pipe.load_state(p, k, value)
    warned = [e for e in logs if e["event"] == "state_unreadable"]
    assert [e["reason"] for e in warned] == ["malformed", "malformed", "unknown_version",
                                             "RecursionError"]
    assert all(e["key"] == "lost" and e["log_level"] == "warning" for e in warned)
    assert set(pipe.restored) == {"kept"}
    out = pipe.process(recs[first.offsets[0]:])
    assert out.dead_letters == [] and pipe.metrics.restored._value.get() == 1
    assert {e.stream_id for e in out.events if e.kind == "final"} == {"kept", "lost"}
