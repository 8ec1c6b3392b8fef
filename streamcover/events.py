"""The one wire-format module: versioned msgpack schemas for everything on Kafka.

One file on purpose (the team's rule: one wire-format module), which is why it runs past
~450 lines: every record type a producer or consumer may see is defined and validated here.

Every record is a msgpack map with a ``v`` (schema version) and a ``type`` field.
Both producers and consumers validate through the models below, so a record
that decodes here is safe to use, and one that does not raises :class:`WireError`
with a machine-readable ``reason`` suitable for a dead-letter record.

Optional fields added after a schema version shipped are listed in a model's
``_omit_default``: :func:`encode` leaves them out while they hold their default, so
records that do not use them stay readable by readers that predate them.
Match events are bounded by the broker's record size (:func:`encode` ``max_bytes``,
:func:`fit_event`). See ``docs/wire-format.md``.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgpack
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION: Literal[1] = 1

SourceKind = Literal["upload", "live"]
SampleFormat = Literal["int16", "float32"]
StreamId = Annotated[str, Field(min_length=1, max_length=256)]

_DTYPES: dict[str, np.dtype[Any]] = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4")}


class WireError(ValueError):
    """A record that cannot be accepted. ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RecordTooLarge(WireError):
    """A record that cannot be made to fit the broker's record size limit."""

    def __init__(self, detail: str) -> None:
        super().__init__("too_large", detail)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # Optional fields newer than the schema version: omitted from the encoding while they
    # hold their default, so readers that predate them still accept such records.
    _omit_default: ClassVar[frozenset[str]] = frozenset()

    v: Literal[1] = SCHEMA_VERSION


class AudioFrame(_Record):
    """A slice of PCM audio from one stream; the Kafka key is ``stream_id``.

    ``seq`` numbers frames from 0 per stream, so gaps, duplicates and reordering
    are detectable. ``start_sample`` is the stream-relative position of the first
    sample, which lets the monitor place a frame exactly even after a gap.
    """

    type: Literal["audio"] = "audio"
    stream_id: StreamId
    seq: int = Field(ge=0)
    start_sample: int = Field(ge=0)
    sent_at: float = Field(description="producer wall clock, unix seconds")
    sample_rate: int = Field(ge=8000, le=192_000)
    channels: int = Field(ge=1, le=8)
    sample_format: SampleFormat
    source: SourceKind
    eos: bool = False
    payload: bytes = b""
    title: str | None = Field(default=None, max_length=1024)
    # Set on an eos frame when the producer ended the stream early (a truncated or damaged
    # file, a decode limit): why. The stream is over either way; its audio is incomplete.
    aborted: str | None = Field(default=None, min_length=1, max_length=512)

    _omit_default: ClassVar[frozenset[str]] = frozenset({"aborted"})

    @model_validator(mode="after")
    def _payload_shape(self) -> AudioFrame:
        if self.aborted is not None and not self.eos:
            raise ValueError("aborted is only valid on an end-of-stream frame")
        width = _DTYPES[self.sample_format].itemsize * self.channels
        if len(self.payload) % width:
            raise ValueError(
                f"payload of {len(self.payload)} bytes is not a whole number of "
                f"{self.channels}-channel {self.sample_format} samples"
            )
        if not self.payload and not self.eos:
            raise ValueError("empty payload on a frame that is not end-of-stream")
        return self

    @property
    def num_samples(self) -> int:
        return len(self.payload) // (_DTYPES[self.sample_format].itemsize * self.channels)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def samples(self) -> np.ndarray:
        """Mono float32 samples in [-1, 1] (channels averaged); a view-free copy."""
        raw = np.frombuffer(self.payload, dtype=_DTYPES[self.sample_format])
        data = raw.reshape(-1, self.channels).astype(np.float32)
        if self.sample_format == "int16":
            data /= 32768.0
        mono: np.ndarray = data.mean(axis=1) if self.channels > 1 else data[:, 0].copy()
        return mono

    @classmethod
    def from_samples(
        cls,
        samples: np.ndarray,
        *,
        stream_id: str,
        seq: int,
        start_sample: int,
        sample_rate: int,
        source: SourceKind,
        sample_format: SampleFormat = "int16",
        eos: bool = False,
        title: str | None = None,
        sent_at: float | None = None,
        aborted: str | None = None,
    ) -> AudioFrame:
        """Pack float samples shaped (n,) or (n, channels) into a frame."""
        arr = np.asarray(samples, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError("samples must be (n,) or (n, channels)")
        if sample_format == "int16":
            payload = (np.clip(arr, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()
        else:
            payload = arr.astype("<f4").tobytes()
        return cls(
            stream_id=stream_id,
            seq=seq,
            start_sample=start_sample,
            sent_at=time.time() if sent_at is None else sent_at,
            sample_rate=sample_rate,
            channels=int(arr.shape[1]),
            sample_format=sample_format,
            source=source,
            eos=eos,
            payload=payload,
            title=title,
            aborted=aborted,
        )


class Span(_Record):
    """A time span in seconds."""

    start: float = Field(ge=0)
    end: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.end < self.start:
            raise ValueError("span end precedes its start")
        return self


EventKind = Literal["match", "update", "final", "setlist_segment", "setlist"]


class SetListEntry(_Record):
    reference_id: str
    title: str | None = None
    artist: str | None = None
    stream_span: Span
    score: float


class MatchEvent(_Record):
    """What the monitor says about a stream.

    ``kind``:
      * ``match`` — a reference passed the threshold for the first time in a segment;
      * ``update`` — the score or aligned span of an open match grew;
      * ``final`` — the verdict at the end of an upload (``reference_id`` is None when nothing matched);
      * ``setlist_segment`` — a live segment closed;
      * ``setlist`` — the whole set list of a stream so far (on demand and at end of stream).
    """

    type: Literal["match_event"] = "match_event"
    event_id: str = Field(min_length=1, max_length=128)
    kind: EventKind
    stream_id: StreamId
    source: SourceKind
    reference_id: str | None = None
    reference: dict[str, str] = Field(default_factory=dict)
    score: float = 0.0
    threshold: float
    chunks_used: int = Field(ge=0)
    stream_span: Span
    reference_span: Span | None = None
    model_id: str
    catalog_version: str
    latency_ms: float = Field(ge=0)
    emitted_at: float
    setlist: list[SetListEntry] = Field(default_factory=list)
    # Earlier set-list entries of the stream that ``setlist`` leaves out (it holds the
    # newest); each was published as its own ``setlist_segment`` event.
    setlist_omitted: int = Field(default=0, ge=0)
    # ``reference`` metadata was cut to fit the broker's record size (see fit_event).
    reference_truncated: bool = False
    # Calibrated confidence: false alarms per stream-hour measured on real unrelated music
    # at ``score`` (``streamcover calibrate``); a consumer picks its own cut with it. When
    # ``false_alarms_at_floor`` is set no negative reached the score and the value is the
    # bound 1 / hours measured. None: the model has no calibration.
    false_alarms_per_hour: float | None = Field(default=None, ge=0)
    false_alarms_at_floor: bool = False
    # The stage scores behind ``score`` (the fused stage-3 score when ``alignment_score`` is
    # set): stage-2 MaxMean and the stage-3 alignment; None when not computed.
    maxmean: float | None = None
    alignment_score: float | None = None

    _omit_default: ClassVar[frozenset[str]] = frozenset({
        "setlist_omitted", "reference_truncated", "false_alarms_per_hour",
        "false_alarms_at_floor", "maxmean", "alignment_score"})

    @model_validator(mode="after")
    def _finite(self) -> MatchEvent:
        for name in ("score", "threshold", "latency_ms", "emitted_at", "false_alarms_per_hour",
                     "maxmean", "alignment_score"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite")
        if self.kind in ("match", "update", "setlist_segment") and self.reference_id is None:
            raise ValueError(f"a {self.kind} event needs a reference_id")
        return self


class DeadLetter(_Record):
    """A record the monitor could not use, kept with its original bytes for replay."""

    type: Literal["dead_letter"] = "dead_letter"
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    original: bytes
    at: float


class SetListRequest(_Record):
    """Ask the monitor for a stream's whole set list; sent on the audio topic keyed by the
    stream id, so it reaches the monitor that owns the stream, in order with its frames."""

    type: Literal["setlist_request"] = "setlist_request"
    stream_id: StreamId
    request_id: str = Field(min_length=1, max_length=128)
    sent_at: float


class StreamState(_Record):
    """Checkpoint of one stream on the compacted state topic (key = stream id).

    Written in the same transaction as the stream's events, at each window close and at end
    of stream. ``resume_*`` say where audio must be re-read from after a restore (the first
    sample not yet turned into feature frames); frames before it are already accounted for.
    ``feature_tail`` holds the feature frames of the next window that exist so far
    (float32 ``[bins, n]``); ``embeddings`` the accumulated chunk embeddings (float16
    ``[n, dim]``, one per ``chunk_index``); ``matcher`` the decision state
    (``streamcover.match.decision.StreamMatcher.to_state``).
    """

    type: Literal["stream_state"] = "stream_state"
    stream_id: StreamId
    source: SourceKind
    title: str | None = None
    finished: bool = False
    sample_rate: int = Field(ge=8000, le=192_000)
    resume_seq: int = Field(ge=0)
    resume_sample: int = Field(ge=0)
    resume_offset: int = Field(ge=0)
    grid_origin_sample: int = Field(ge=0)
    frames_done: int = Field(ge=0)
    win_start: int = Field(ge=0)
    epoch_windows: int = Field(ge=0)
    last_end: int = Field(ge=0)
    next_window: int = Field(ge=0)
    feature_bins: int = Field(ge=0)
    feature_tail: bytes = b""
    embed_dim: int = Field(ge=0)
    chunk_index: list[int] = Field(default_factory=list)
    chunk_start: list[float] = Field(default_factory=list)
    embeddings: bytes = b""
    matcher: dict[str, Any] = Field(default_factory=dict)
    model_id: str
    catalog_version: str
    updated_at: float
    # An upload's features from its start for stage 3 (uint8 [feature_bins, n]).
    query_features: bytes = b""
    # The front end's tuning fold (streamcover.audio.tuning): its phase and recent spreads
    # (float32 [n, phases]), so that features after a restore equal an uninterrupted run's.
    tuning_phase: int = Field(0, ge=0, le=3)
    tuning_recent: bytes = Field(b"", max_length=4096)

    _omit_default: ClassVar[frozenset[str]] = frozenset({"query_features", "tuning_phase",
                                                          "tuning_recent"})

    @model_validator(mode="after")
    def _shapes(self) -> StreamState:
        if len(self.chunk_index) != len(self.chunk_start):
            raise ValueError("chunk_index and chunk_start differ in length")
        if len(self.embeddings) != 2 * self.embed_dim * len(self.chunk_index):
            raise ValueError("embeddings is not float16 [len(chunk_index), embed_dim]")
        if self.feature_bins and len(self.feature_tail) % (4 * self.feature_bins):
            raise ValueError("feature_tail is not float32 [feature_bins, n]")
        if self.query_features and (not self.feature_bins
                                    or len(self.query_features) % self.feature_bins):
            raise ValueError("query_features is not uint8 [feature_bins, n]")
        return self

    def embedding_matrix(self) -> np.ndarray:
        """The accumulated chunk embeddings as float32 [n, embed_dim]."""
        arr = np.frombuffer(self.embeddings, dtype="<f2").astype(np.float32)
        return arr.reshape(len(self.chunk_index), self.embed_dim)

    def feature_matrix(self) -> np.ndarray:
        """The feature tail as float32 [bins, n]."""
        if not self.feature_bins:
            return np.zeros((0, 0), dtype=np.float32)
        arr = np.frombuffer(self.feature_tail, dtype="<f4").copy()
        return arr.reshape(self.feature_bins, -1)


class PartitionMark(_Record):
    """How far the monitor has processed one input partition (state topic, key
    ``__mark__:<topic>:<partition>``). On a replay after a restore, records below
    ``processed_upto`` are only re-read to rebuild stream buffers, never acted on twice."""

    type: Literal["partition_mark"] = "partition_mark"
    topic: str
    partition: int = Field(ge=0)
    processed_upto: int = Field(ge=0)
    updated_at: float


def event_id(*parts: object) -> str:
    """A deterministic id: the same decision on the same input always gets the same id."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\x1f")
    return h.hexdigest()


R = TypeVar("R", bound=_Record)

_TYPES: dict[str, type[_Record]] = {
    "audio": AudioFrame,
    "match_event": MatchEvent,
    "dead_letter": DeadLetter,
    "setlist_request": SetListRequest,
    "stream_state": StreamState,
    "partition_mark": PartitionMark,
}


# What Kafka counts in a record besides its key and value: the record batch header
# (61 bytes) and the record's own framing (at most 21), with room for a few headers.
RECORD_OVERHEAD_BYTES = 128
# Metadata fields a match event keeps when its reference metadata must be cut to fit.
_KEPT_REFERENCE_FIELDS = ("title", "artist")
_KEPT_FIELD_CHARS = 256


def value_budget(max_message_bytes: int, key: bytes | None = None) -> int:
    """The largest value that fits in a record of ``max_message_bytes`` with this key."""
    return max_message_bytes - RECORD_OVERHEAD_BYTES - (len(key) if key else 0)


def _pack(record: _Record) -> bytes:
    omit = {f for f in record._omit_default
            if getattr(record, f) == type(record).model_fields[f].get_default(call_default_factory=True)}
    data: bytes = msgpack.packb(record.model_dump(mode="python", exclude=omit or None),
                                use_bin_type=True)
    return data


def encode(record: _Record, *, max_bytes: int | None = None) -> bytes:
    """Serialise a validated record to msgpack.

    With ``max_bytes`` (use :func:`value_budget` of ``kafka.max_message_bytes``), a match
    event too large for it is shrunk by :func:`fit_event`; any other record too large
    raises :class:`RecordTooLarge`.
    """
    data = _pack(record)
    if max_bytes is None or len(data) <= max_bytes:
        return data
    if isinstance(record, MatchEvent):
        return _pack(fit_event(record, max_bytes))
    raise RecordTooLarge(f"{type(record).__name__} of {len(data)} bytes exceeds {max_bytes}")


def fit_event(event: MatchEvent, max_bytes: int) -> MatchEvent:
    """The event itself if it encodes within ``max_bytes``, else a smaller one that does.

    In order: the set list keeps its newest entries (``setlist_omitted`` counts the rest);
    then ``reference`` keeps only title and artist, cut to 256 characters, and then
    nothing (``reference_truncated``). Raises :class:`RecordTooLarge` if even that fails.
    """
    def size(ev: MatchEvent) -> int:
        return len(_pack(ev))

    if size(event) <= max_bytes:
        return event
    n = len(event.setlist)
    if n:
        def keep(k: int) -> MatchEvent:
            return event.model_copy(update={"setlist": event.setlist[n - k:] if k else [],
                                            "setlist_omitted": event.setlist_omitted + n - k})
        lo, hi = 0, n - 1  # the largest k that fits, by bisection (k = 0 is tried last)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if size(keep(mid)) <= max_bytes:
                lo = mid
            else:
                hi = mid - 1
        event = keep(lo)
        if size(event) <= max_bytes:
            return event
    short = {k: event.reference[k][:_KEPT_FIELD_CHARS]
             for k in _KEPT_REFERENCE_FIELDS if k in event.reference}
    for reference in (short, {}):
        event = event.model_copy(update={"reference": reference, "reference_truncated": True})
        if size(event) <= max_bytes:
            return event
    raise RecordTooLarge(f"match event {event.event_id} does not fit {max_bytes} bytes even "
                         f"without its set list and reference metadata ({size(event)} bytes)")


def decode_any(data: bytes) -> _Record:
    """Parse and validate any record type; raises :class:`WireError`."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise WireError("malformed", f"not valid msgpack ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise WireError("malformed", f"expected a map, got {type(obj).__name__}")
    version = obj.get("v")
    if version != SCHEMA_VERSION:
        raise WireError("unknown_version", f"schema version {version!r} is not supported")
    kind = obj.get("type")
    model = _TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise WireError("unknown_type", f"record type {kind!r} is not known")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise WireError("invalid", _summarise(exc)) from exc


def decode(data: bytes, model: type[R]) -> R:
    """Parse and validate one record of the expected type; raises :class:`WireError`."""
    record = decode_any(data)
    if not isinstance(record, model):
        raise WireError("unexpected_type", f"expected {model.__name__}, got {type(record).__name__}")
    return record


def _summarise(exc: ValidationError) -> str:
    errs = exc.errors(include_url=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<record>'}: {e['msg']}" for e in errs[:5]]
    more = f" (+{len(errs) - 5} more)" if len(errs) > 5 else ""
    return "; ".join(parts) + more
