"""The one settings object: every knob of streamcover is named here, once.

Values come from (highest first) explicit arguments, environment variables
prefixed ``STREAMCOVER_`` (nested with ``__``, e.g. ``STREAMCOVER_KAFKA__BOOTSTRAP_SERVERS``),
an optional ``.env`` file in the working directory, then the defaults below.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    """Checkpoints, corpora, broker jars and other large state live outside the work tree."""
    return Path.home() / ".cache" / "streamcover"


class KafkaSettings(BaseModel):
    """Where the broker is, which topics we use and how we authenticate."""

    bootstrap_servers: str = "127.0.0.1:9092"
    audio_topic: str = "streamcover.audio"
    match_topic: str = "streamcover.matches"
    dead_letter_topic: str = "streamcover.dead-letter"
    state_topic: str = "streamcover.state"
    group_id: str = "streamcover-monitor"
    client_id: str = "streamcover"
    transactional_id_prefix: str = "streamcover-monitor"
    audio_partitions: int = Field(6, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    request_timeout_ms: int = Field(30_000, ge=1000)
    # Largest record the producer sends (aiokafka max_request_size); must not exceed the
    # broker's message.max.bytes (the local broker and docker-compose.yml use 8 MiB).
    max_message_bytes: int = Field(8_388_608, ge=1024)
    # Replicas per topic created by consumers.kafka.ensure_topics (1 for the local broker).
    topic_replication_factor: int = Field(1, ge=1)
    # Consumer group liveness: a member silent this long is dropped and its partitions move
    # (a paused monitor is fenced after it, docs/monitor.md "Fencing"). The broker bounds it
    # (group.min.session.timeout.ms, 6 s by default).
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    # The broker aborts a transaction left open this long (a monitor killed mid-batch).
    transaction_timeout_ms: int = Field(60_000, ge=1000)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "security_protocol SASL_* needs kafka.sasl_mechanism, kafka.sasl_username "
                "and kafka.sasl_password"
            )
        return self


class AudioSettings(BaseModel):
    """Windowing of the incoming audio: 20 s windows every 10 s, as in ByteCover3."""

    window_seconds: float = Field(20.0, gt=0)
    hop_seconds: float = Field(10.0, gt=0)
    # Clips shorter than this are not embedded at all (ByteCover3 queries go down to 6 s).
    min_clip_seconds: float = Field(6.0, gt=0)
    # Sample rate a producer sends at; the monitor resamples anything else.
    wire_sample_rate: int = Field(22_050, ge=8000, le=192_000)
    # Seconds of audio per published frame.
    frame_seconds: float = Field(0.5, gt=0, le=10)
    # Largest accepted frame payload; bigger frames are dead-lettered.
    max_frame_bytes: int = Field(1_048_576, ge=1024)
    # Live capture (``streamcover mic``): audio held while the broker cannot take it. Beyond
    # this, captured blocks are dropped and the stream says so with a gap in seq and
    # start_sample, so memory stays bounded and the monitor inserts silence or restarts.
    capture_buffer_seconds: float = Field(30.0, gt=0)
    # Limits on untrusted files (`send`, `catalog add`, `identify`: streamcover.audio.decode).
    # Each exceeded limit is an AudioLimitError naming the setting. Decoded (and declared)
    # duration, file size, and seconds spent inside the decoder (not waiting on its caller).
    max_file_seconds: float = Field(3 * 3600.0, gt=0)
    max_file_bytes: int = Field(2 * 1024**3, ge=1024)
    max_decode_seconds: float = Field(600.0, gt=0)
    # FFmpeg demuxers a file may be read with, whatever its extension says (FFmpeg refuses
    # any other before opening it). Playlists (hls, concat, dash), image sequences and
    # devices are never on it: they open further files or URLs.
    allowed_containers: tuple[str, ...] = (
        "wav", "w64", "flac", "mp3", "ogg", "mov", "matroska", "aac", "aiff", "caf", "au",
        "wv", "ape", "tta", "asf", "avi", "flv", "mpegts", "ac3", "eac3", "amr",
    )
    # Longest hole in a stream (in its start_sample clock, or in seq x frame_seconds) that
    # the monitor fills with silence; a larger one restarts the windowing at the new
    # position. The hole's size comes from the producer, so it is never filled beyond this.
    max_gap_seconds: float = Field(10.0, ge=0, le=3600)
    # Sample rates the monitor accepts; a frame at any other rate is dead-lettered
    # (``unsupported_rate``): odd rates need resampling filters of millions of taps.
    supported_sample_rates: tuple[int, ...] = (8000, 11_025, 16_000, 22_050, 24_000, 32_000,
                                               44_100, 48_000, 88_200, 96_000)

    @model_validator(mode="after")
    def _hop_fits(self) -> AudioSettings:
        if self.hop_seconds > self.window_seconds:
            raise ValueError("audio.hop_seconds must not exceed audio.window_seconds")
        if self.min_clip_seconds > self.window_seconds:
            raise ValueError("audio.min_clip_seconds must not exceed audio.window_seconds")
        for rate in (*self.supported_sample_rates, self.wire_sample_rate):
            for target in (22_050, 44_100):  # the front ends' rates
                # the ratio's larger term sets the filter length (audio.resample.MAX_TAPS)
                if not 8000 <= rate <= 192_000 or max(rate, target) // gcd(rate, target) > 1024:
                    raise ValueError(f"audio.supported_sample_rates: {rate} Hz cannot be "
                                     f"resampled to {target} Hz with a bounded filter")
        return self


class FrontEndSettings(BaseModel):
    """Which spectral feature feeds the encoder."""

    name: Literal["cqt", "hpcp"] = "hpcp"
    # Average-pooling factor along time for the CQT (hop 512 at 22.05 kHz -> 43 frames/s).
    cqt_pool: int = Field(20, ge=1)
    # HPCP input rate. 22050: 2048/512 frames, the same bins and frame times as the shared
    # data set's recipe at 44100 (4096/1024 frames), which it matches at r >= 0.9999 on real
    # music; the monitor then takes the 22.05 kHz wire audio as it is (the resampler was about
    # 30 % of its CPU) and the FFTs halve. The calibration on real music gives the same
    # operating points and recall either way (docs/results/2026-12-06-half-rate-hpcp.md).
    # Catalogs are not rebuilt when the rate changes: the features agree at r >= 0.9999 (a
    # catalog at one rate queried at the other was not measured end to end).
    hpcp_sample_rate: int = 22_050
    # HPCP profiles per frame at references 1/n semitone apart, one kept per frame by a causal
    # fold (streamcover/audio/tuning.py): 2 keeps music that sits half a semitone off the
    # 440 Hz grid (a re-upload 3 % fast or slow) from smearing over two bins; 1 is the shared
    # data set's recipe alone. References and queries must use the same value (catalog reembed).
    hpcp_tuning_phases: int = Field(2, ge=1, le=4)

    @model_validator(mode="after")
    def _hpcp_rate(self) -> FrontEndSettings:
        if self.hpcp_sample_rate not in (44_100, 22_050):
            raise ValueError("frontend.hpcp_sample_rate must be 44100 or 22050")
        return self


class EncoderSettings(BaseModel):
    """The ByteCover3 local encoder at inference time."""

    # Shipped model checkpoint; relative paths resolve against the project root.
    model_path: Path = Path("models/streamcover-hpcp-compact.pt")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(64, ge=1)
    max_batch_wait_ms: float = Field(50.0, ge=0)
    # CPU threads for torch intra-op work; 0 means "one per physical core".
    threads: int = Field(0, ge=0)
    # CPU inference precision. "bf16" runs a bf16 copy of the weights: ~1.9x faster on CPUs
    # with native bf16 (AVX512-BF16/AMX), embeddings within cos 0.996 of fp32 (docs/model.md).
    # GPUs always autocast (bf16 where supported, else fp16).
    cpu_precision: Literal["fp32", "bf16"] = "fp32"


# The faiss index kinds a catalog snapshot can be built as (streamcover.catalog.factory).
IndexKind = Literal["hnsw", "hnsw_sq8", "hnsw_sq4", "hnsw_pq"]

# How two chunk sets' MaxMean directions combine into one score (streamcover.model.maxmean).
ScoreRule = Literal["length_weighted", "symmetric", "shorter_first"]


class CatalogSettings(BaseModel):
    """The reference catalog and its two-stage search."""

    path: Path = Field(default_factory=lambda: default_cache_dir() / "catalog")
    index: IndexKind = "hnsw_sq8"
    hnsw_m: int = Field(16, ge=4)
    hnsw_ef_construction: int = Field(100, ge=8)
    hnsw_ef_search: int = Field(64, ge=8)
    pq_m: int = Field(64, ge=1)
    # The index and search defaults are the configuration measured at 10k to 1M chunks
    # (docs/catalog.md): SQ8 codes of a 128-d projection in an M=16 graph, 272 B/chunk.
    # > 0: build the HNSW graph over the embeddings' top pca_dim principal directions
    # (4x fewer bytes per graph step at 128 of 512; at or above the embedding dimension,
    # no projection). The projection is refitted by a full rebuild as the catalog grows
    # (catalog.snapshot.REFIT_GROWTH). Stage 1 re-scores exactly, unless stage 2 screens.
    pca_dim: int = Field(128, ge=0)
    # Stage 1: each query chunk's top_k nearest *distinct* references, looked for among its
    # top_k * stage1_fetch_factor nearest chunks (a nearby reference has several).
    top_k: int = Field(72, ge=1)
    stage1_fetch_factor: float = Field(1.0, ge=1)
    max_candidates: int = Field(750, ge=1)
    # Approximate indexes (SQ8, PQ, pca_dim): fetch top_k x this by approximate similarity,
    # re-score exactly from the float16 store, keep top_k.
    stage1_refine: int = Field(4, ge=1)
    # On a projected HNSW-flat snapshot (index "hnsw" with pca_dim > 0): screen stage-2
    # candidates by MaxMean on the graph's own projected rows and score only the
    # stage2_screen_leaders best exactly (stage 1 then skips its exact re-score).
    stage2_screen: bool = True
    # Stage 1 also takes the references whose centroids (normalised mean chunk vectors)
    # are nearest the query's centroid: this many (0 = off). Needs a snapshot built by
    # this version; older ones simply have none until the next build.
    centroid_candidates: int = Field(180, ge=0)
    stage2_screen_leaders: int = Field(32, ge=1)
    # How stage 2 (and exhaustive search, and `streamcover eval`) turns both MaxMean
    # directions into one score (streamcover.model.maxmean.combine_directions):
    # "length_weighted" (each direction weighted by the other set's length), "symmetric"
    # (their mean) or ByteCover3's "shorter_first". Length-weighted ranked held-out SHS
    # covers better than shorter-first at every query length and scores a short query as
    # shorter-first does, which keeps first-window detection (docs/training.md).
    score_rule: ScoreRule = "length_weighted"
    # Threads one query may use in faiss and BLAS (0 = physical cores), set process-wide
    # when a searcher opens. One: split queries wait on each other's threads, which is
    # what sets p99 on a small shared machine (streamcover.device.configure_search_threads).
    search_threads: int = Field(1, ge=0)
    snapshot_poll_seconds: float = Field(5.0, gt=0)
    # Hop between reference chunks (`catalog add` / `reembed`); query windows keep
    # audio.hop_seconds. A denser reference grid bounds how far off it a query can start
    # (half this hop); measured in docs/results/2026-12-03-reference-grid.md.
    reference_hop_seconds: float = Field(5.0, gt=0, le=60)
    # Playback speeds (tempo and pitch together) a reference is also rendered and embedded
    # at, as more chunks of the same reference: a re-upload played a few per cent fast or
    # slow moves bass notes between frequency bins, which the HPCP tuning fold cannot undo.
    # Each speed adds about as many chunks as the recording has (3x the chunks of no
    # renders, 692 against 248 B per reference second). Changing it means `catalog
    # reembed`; measured in docs/results/2026-12-04-reference-speeds.md.
    reference_speeds: tuple[float, ...] = (0.94, 1.06)

    @field_validator("reference_speeds")
    @classmethod
    def _speeds(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.8 <= s <= 1.25 or abs(s - 1.0) < 1e-3 for s in v):
            raise ValueError(f"reference speeds must lie in [0.8, 1.25] and not be 1 (the "
                             f"recording itself is always embedded), got {list(v)}")
        if len(set(v)) != len(v):
            raise ValueError(f"reference speeds repeat: {list(v)}")
        return tuple(sorted(float(s) for s in v))

    # Cap on a reference's `extra` metadata (JSON bytes), checked at catalog time: it is
    # copied into every match event, which must fit the broker's max.message.bytes.
    max_extra_bytes: int = Field(4096, ge=0, le=262_144)


class MatchSettings(BaseModel):
    """When accumulated evidence becomes a match event."""

    # Upload decisions, on the fused stage-3 score. Calibrated on real music by `streamcover
    # calibrate` (models/streamcover-hpcp-compact.calibration.json, docs/monitor.md
    # "Calibration"): 1 false alarm in 12.85 h of unrelated Debian music (whole recordings and
    # 10/30/60 s uploads of them) at these points. A query of one chunk (an upload's first
    # window, or a clip shorter than a window) is judged against one_chunk_threshold: its
    # best wrong score runs far higher (0.970; from two chunks on 0.603, the one false alarm,
    # then 0.423), since one chunk meets every reference chunk. Both are the sweep's floor
    # (`calibrate --floor`), a margin for speed renders on every reference
    # (docs/results/2026-12-04-reference-speeds.md).
    threshold: float = Field(0.50, ge=-1, le=1)
    one_chunk_threshold: float = Field(0.975, ge=-1, le=1)
    # Hysteresis: an open match is closed only when the score drops below this.
    release_threshold: float = Field(0.40, ge=-1, le=1)
    # Live set lists work on chunk similarities (MaxMean's cosine scale), not on the fused
    # stage-3 score: a segment opens when the MaxMean of its newest live_min_chunks or more
    # agreeing chunks reaches live_threshold; a chunk agrees with a reference when its
    # similarity reaches chunk_threshold (also what an upload match's aligned span counts).
    # Calibrated on real music by `streamcover calibrate --live`
    # (docs/results/2026-12-04-live-calibration.md, 2026-12-06-half-rate-hpcp.md): no segment
    # opened in 9.97 h of unrelated live streams, 82 of 96 set pieces found; live_threshold
    # is the sweep's floor (`--live-floor`), a margin over the highest false segment (0.765).
    live_threshold: float = Field(0.815, ge=-1, le=1)
    chunk_threshold: float = Field(0.65, ge=-1, le=1)
    # Uploads: fewest query chunks a match needs (one: one_chunk_threshold judges a single
    # chunk).
    min_chunks: int = Field(1, ge=1)
    # Live streams: fewest agreeing chunks that open a segment (a single chunk of unrelated
    # music reached 0.84 on a cover-set reference in the live calibration).
    live_min_chunks: int = Field(2, ge=1)
    # Live streams: chunks of history MaxMean looks at (the sliding horizon).
    horizon_chunks: int = Field(6, ge=1)
    # Emit an update when the score grows by at least this much.
    update_min_delta: float = Field(0.02, ge=0)
    # ... or when the aligned reference span grows by at least this many seconds.
    update_min_span_s: float = Field(30.0, ge=0)
    # Uploads: at most this many chunks (newest) form the query (20 min at a 10 s hop).
    max_upload_chunks: int = Field(120, ge=1)
    # Live: a segment closes after this many chunks in a row below release_threshold ...
    change_patience_chunks: int = Field(2, ge=1)
    # ... or at once when another reference beats it on the newest chunk by this margin.
    change_margin: float = Field(0.05, ge=0)
    # Live: closed set-list segments a stream keeps (the newest; older ones were published
    # as setlist_segment events). A `setlist` event counts the rest in `setlist_omitted`.
    setlist_max_entries: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _hysteresis(self) -> MatchSettings:
        if self.release_threshold > min(self.threshold, self.one_chunk_threshold):
            raise ValueError("match.release_threshold must not exceed match.threshold "
                             "or match.one_chunk_threshold")
        if self.chunk_threshold > self.live_threshold:
            raise ValueError("match.chunk_threshold must not exceed match.live_threshold")
        return self


class MonitorSettings(BaseModel):
    """The long-running monitor service."""

    max_streams: int = Field(1000, ge=1)
    idle_evict_seconds: float = Field(300.0, gt=0)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9464, ge=0, le=65535)
    # Largest sequence gap (in frames) filled with silence; larger gaps restart the stream window.
    max_gap_frames: int = Field(20, ge=0)
    # Frames that may arrive early and wait for a missing predecessor.
    reorder_frames: int = Field(4, ge=0)
    # Torch intra-op threads of the monitor process (front end and encoder; it overrides
    # encoder.threads there; 0: keep encoder.threads). The monitor's ops are small and the
    # event loop needs a core too: on a shared 2-core machine two contending threads ran a
    # 200-window encoder batch in 18.6 s against 0.62 s with one (docs/monitor.md).
    torch_threads: int = Field(1, ge=0)
    # Transactional id of this monitor instance (unique per running instance; stable across restarts).
    instance_id: str = "0"
    # Upper bound for the seconds a poll may block, so batching and eviction stay responsive.
    poll_timeout_ms: int = Field(100, ge=1)
    # Shortest time from one batch's start to the next: records arriving meanwhile join the
    # next batch. Every batch is one transaction per input partition, and the broker's CPU
    # follows the transaction rate, not the bytes (docs/monitor.md "Benchmark"); 0 processes
    # whatever a poll returns at once.
    min_batch_interval_ms: int = Field(0, ge=0, le=5000)
    # Reading a partition's checkpoints back at assignment: each attempt must reach the state
    # partition's end (last stable offset) within this many seconds; after this many failed
    # attempts the monitor stops with exit code 74 (docs/monitor.md "Broker faults").
    state_load_timeout_s: float = Field(60.0, gt=0)
    state_load_attempts: int = Field(3, ge=1)
    # How long the monitor keeps reconnecting (with backoff) to an unreachable broker before
    # it exits with code 75 for its supervisor to restart it.
    broker_retry_seconds: float = Field(300.0, gt=0)


class VerifySettings(BaseModel):
    """Stage 3: local alignment of the query's features against the best MaxMean candidates.

    MaxMean compares bags of chunk embeddings and ignores their order; the alignment
    (streamcover.match.align, Qmax with OTI transposition) checks that the same chroma
    progression plays in the same order, and the fused score (streamcover.match.fusion)
    is what upload decisions threshold. Off, uploads are decided on MaxMean alone and
    match.threshold must be set for that scale (docs/monitor.md, "Calibration").
    """

    enabled: bool = True
    # Stage-2 leaders (by MaxMean) that are aligned; the cost of a window is bounded by it.
    candidates: int = Field(8, ge=1, le=256)
    # Query features kept per stream for the alignment (the first seconds of the stream).
    max_query_seconds: float = Field(480.0, gt=0, le=3600)


class TrainSettings(BaseModel):
    """Defaults for training; a --config file overrides these per run."""

    runs_dir: Path = Field(default_factory=lambda: default_cache_dir() / "runs")
    seed: int = 1234


class Settings(BaseSettings):
    """All of streamcover's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMCOVER_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    frontend: FrontEndSettings = Field(default_factory=FrontEndSettings)
    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    match: MatchSettings = Field(default_factory=MatchSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return Settings()


PROJECT_ROOT = Path(__file__).resolve().parent.parent
