"""Round-trip and rejection tests for the wire format."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcover import events
from streamcover.events import AudioFrame, DeadLetter, MatchEvent, Span, WireError


def _frame(**kw: object) -> AudioFrame:
    base: dict[str, object] = dict(
        stream_id="s1", seq=0, start_sample=0, sample_rate=22050, source="upload"
    )
    base.update(kw)
    samples = np.sin(np.linspace(0, 20, 2205, dtype=np.float32)) * 0.5
    return AudioFrame.from_samples(samples, **base)  # type: ignore[arg-type]


def _event(**kw: object) -> MatchEvent:
    base: dict[str, object] = dict(
        event_id=events.event_id("s1", "match", "ref-1", 0),
        kind="match",
        stream_id="s1",
        source="live",
        reference_id="ref-1",
        reference={"title": "Song", "artist": "Someone"},
        score=0.71,
        threshold=0.55,
        chunks_used=3,
        stream_span=Span(start=0.0, end=40.0),
        reference_span=Span(start=30.0, end=70.0),
        model_id="m-abc",
        catalog_version="7",
        latency_ms=12.5,
        emitted_at=1_700_000_000.0,
    )
    base.update(kw)
    return MatchEvent(**base)  # type: ignore[arg-type]


def test_audio_frame_round_trip_int16() -> None:
    frame = _frame(title="clip.mp4")
    back = events.decode(events.encode(frame), AudioFrame)
    assert back == frame
    assert back.num_samples == 2205
    assert back.duration == pytest.approx(0.1)
    # int16 quantisation error is below one LSB
    expected = np.sin(np.linspace(0, 20, 2205, dtype=np.float32)) * 0.5
    assert np.max(np.abs(back.samples() - expected)) < 1.0 / 32768 + 1e-7


def test_audio_frame_float32_stereo_mixdown() -> None:
    left = np.full(100, 0.25, np.float32)
    right = np.full(100, -0.75, np.float32)
    frame = AudioFrame.from_samples(
        np.stack([left, right], axis=1), stream_id="s", seq=3, start_sample=300,
        sample_rate=48000, source="live", sample_format="float32",
    )
    back = events.decode(events.encode(frame), AudioFrame)
    assert back.channels == 2
    np.testing.assert_allclose(back.samples(), np.full(100, -0.25, np.float32))


def test_end_of_stream_may_be_empty_but_data_frame_may_not() -> None:
    eos = AudioFrame(
        stream_id="s", seq=9, start_sample=900, sent_at=1.0, sample_rate=22050,
        channels=1, sample_format="int16", source="upload", eos=True,
    )
    assert events.decode(events.encode(eos), AudioFrame).eos
    with pytest.raises(ValueError, match="empty payload"):
        AudioFrame(
            stream_id="s", seq=9, start_sample=900, sent_at=1.0, sample_rate=22050,
            channels=1, sample_format="int16", source="upload",
        )


def test_match_event_round_trip_with_setlist() -> None:
    entry = events.SetListEntry(
        reference_id="ref-1", title="Song", stream_span=Span(start=0, end=180), score=0.8
    )
    ev = _event(kind="setlist", reference_id=None, setlist=[entry, entry])
    back = events.decode(events.encode(ev), MatchEvent)
    assert back == ev and len(back.setlist) == 2


def test_dead_letter_round_trip_keeps_original_bytes() -> None:
    dl = DeadLetter(
        reason="malformed", detail="x", topic="t", partition=1, offset=42,
        key=b"s1", original=b"\x00\xff garbage", at=1.0,
    )
    back = events.decode(events.encode(dl), DeadLetter)
    assert back.original == b"\x00\xff garbage" and back.key == b"s1"


def test_event_id_is_deterministic_and_discriminating() -> None:
    a = events.event_id("s1", "match", "r", 0)
    assert a == events.event_id("s1", "match", "r", 0)
    assert a != events.event_id("s1", "match", "r", 1)
    assert a != events.event_id("s1", "update", "r", 0)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc1\xc1\xc1", "malformed"),
        (b"", "malformed"),
        (msgpack.packb([1, 2, 3]), "malformed"),
        (msgpack.packb({"v": 2, "type": "audio"}), "unknown_version"),
        (msgpack.packb({"type": "audio"}), "unknown_version"),
        (msgpack.packb({"v": 1, "type": "video"}), "unknown_type"),
        (msgpack.packb({"v": 1, "type": "audio", "stream_id": "s"}), "invalid"),
    ],
)
def test_rejects_malformed_records(data: bytes, reason: str) -> None:
    with pytest.raises(WireError) as info:
        events.decode_any(data)
    assert info.value.reason == reason


def _raw_frame(**overrides: object) -> bytes:
    obj = _frame().model_dump()
    obj.update(overrides)
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(
    "overrides",
    [
        {"payload": b"\x00\x01\x02"},  # odd number of bytes for int16
        {"channels": 2, "payload": b"\x00\x01" * 3},  # not whole stereo samples
        {"sample_rate": 100},
        {"channels": 0},
        {"sample_format": "int24"},
        {"source": "radio"},
        {"seq": -1},
        {"stream_id": ""},
        {"seq": "1"},  # strict: no coercion from strings
        {"extra_field": 1},
    ],
)
def test_rejects_invalid_frames(overrides: dict[str, object]) -> None:
    with pytest.raises(WireError) as info:
        events.decode(_raw_frame(**overrides), AudioFrame)
    assert info.value.reason == "invalid"


def test_decode_checks_the_expected_type() -> None:
    with pytest.raises(WireError) as info:
        events.decode(events.encode(_event()), AudioFrame)
    assert info.value.reason == "unexpected_type"


def test_match_event_validation() -> None:
    with pytest.raises(ValueError, match="finite"):
        _event(score=math.nan)
    with pytest.raises(ValueError, match="reference_id"):
        _event(reference_id=None)
    with pytest.raises(ValueError, match="precedes"):
        Span(start=5, end=1)
    # a final verdict without a match is legitimate
    assert _event(kind="final", reference_id=None).reference_id is None


@settings(max_examples=60, deadline=None)
@given(
    samples=st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=300),
    seq=st.integers(0, 2**40),
    fmt=st.sampled_from(["int16", "float32"]),
    eos=st.booleans(),
)
def test_frame_round_trip_property(samples: list[float], seq: int, fmt: str, eos: bool) -> None:
    arr = np.asarray(samples, np.float32)
    frame = AudioFrame.from_samples(
        arr, stream_id="p", seq=seq, start_sample=seq * 300, sample_rate=16000,
        source="live", sample_format=fmt, eos=eos,  # type: ignore[arg-type]
    )
    back = events.decode(events.encode(frame), AudioFrame)
    assert back == frame
    tol = 1.0 / 32768 + 1e-6 if fmt == "int16" else 0.0
    assert np.max(np.abs(back.samples() - arr)) <= tol


# ---- additions to schema version 1: aborted streams, bounded match events ------------------


def test_aborted_end_of_stream_round_trip() -> None:
    eos = AudioFrame.from_samples(np.zeros(0, np.float32), stream_id="s1", seq=7, start_sample=700,
                                  sample_rate=22050, source="upload", eos=True,
                                  aborted="TruncatedAudioError: truncated after 3.00 s")
    back = events.decode(events.encode(eos), AudioFrame)
    assert back == eos and back.eos and back.aborted is not None and "truncated" in back.aborted
    with pytest.raises(ValueError, match="end-of-stream"):
        _frame(aborted="why")


def test_new_optional_fields_are_left_out_at_their_defaults() -> None:
    """Records that do not use a newer optional field encode as before, so readers that
    predate the field (they refuse unknown fields) still accept them."""
    frame = msgpack.unpackb(events.encode(_frame(eos=True)))
    event = msgpack.unpackb(events.encode(_event()))
    assert "aborted" not in frame
    assert "setlist_omitted" not in event and "reference_truncated" not in event
    marked = msgpack.unpackb(events.encode(_event(setlist_omitted=3)))
    assert marked["setlist_omitted"] == 3


def _setlist_event(n: int, title_chars: int = 40) -> MatchEvent:
    entries = [events.SetListEntry(reference_id=f"ref-{i}", title=f"{i:05d}" + "t" * title_chars,
                                   artist="a", stream_span=Span(start=i * 200.0, end=i * 200.0 + 180),
                                   score=0.8) for i in range(n)]
    return _event(kind="setlist", reference_id=None, setlist=entries)


def test_encode_fits_a_long_set_list_into_the_record_budget() -> None:
    ev = _setlist_event(5000)
    full = events.encode(ev)
    budget = events.value_budget(65_536, key=b"s1")
    assert len(full) > budget
    data = events.encode(ev, max_bytes=budget)
    assert len(data) <= budget
    back = events.decode(data, MatchEvent)
    kept = len(back.setlist)
    assert 0 < kept < 5000 and back.setlist_omitted == 5000 - kept
    # The newest entries are the ones kept, in order; the bisection leaves little room unused.
    assert [e.reference_id for e in back.setlist] == [f"ref-{i}" for i in range(5000 - kept, 5000)]
    one_more = _setlist_event(5000).model_copy(
        update={"setlist": ev.setlist[5000 - kept - 1:], "setlist_omitted": 5000 - kept - 1})
    assert len(events.encode(one_more)) > budget
    # An event that fits is encoded unchanged.
    assert events.encode(_event(), max_bytes=budget) == events.encode(_event())


def test_encode_cuts_oversized_reference_metadata_with_a_marker() -> None:
    ev = _event(reference={"title": "T" * 5000, "artist": "A", "notes": "x" * 200_000})
    data = events.encode(ev, max_bytes=10_000)
    assert len(data) <= 10_000
    back = events.decode(data, MatchEvent)
    assert back.reference_truncated and back.reference == {"title": "T" * 256, "artist": "A"}
    assert back.reference_id == ev.reference_id and back.score == ev.score


def test_records_that_cannot_shrink_are_refused_by_name() -> None:
    frame = _frame()
    with pytest.raises(events.RecordTooLarge) as info:
        events.encode(frame, max_bytes=1000)
    assert info.value.reason == "too_large" and "AudioFrame" in str(info.value)
    with pytest.raises(events.RecordTooLarge):
        events.encode(_event(model_id="m" * 5000), max_bytes=2000)


def test_value_budget_leaves_room_for_key_and_framing() -> None:
    assert events.value_budget(1_048_576) == 1_048_576 - events.RECORD_OVERHEAD_BYTES
    assert events.value_budget(1_048_576, b"k" * 256) == 1_048_576 - events.RECORD_OVERHEAD_BYTES - 256
