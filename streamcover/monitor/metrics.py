"""Prometheus metrics of the monitor (one registry per monitor instance, so tests can run
several in one process). Served by :func:`serve` on ``monitor.metrics_host:metrics_port``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streamcover.monitor.profile import StageProfile

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The monitor's counters, gauges and histograms."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames_in = Counter("streamcover_frames_in", "Audio frames consumed", registry=r)
        self.frames_dropped = Counter(
            "streamcover_frames_dropped", "Frames not used, by reason", ["reason"], registry=r
        )
        self.frames_converted = Counter(
            "streamcover_frames_converted", "Frames fixed up before use, by what", ["what"], registry=r
        )
        self.windows = Counter("streamcover_windows_embedded", "Windows embedded", registry=r)
        self.batch_size = Histogram(
            "streamcover_batch_size", "Windows per encoder batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )
        self.embed_latency = Histogram(
            "streamcover_embed_seconds", "Encoder time per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.search_latency = Histogram(
            "streamcover_search_seconds", "Two-stage search time per window", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.feature_latency = Histogram(
            "streamcover_features_seconds", "Feature extraction time per poll batch",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.event_latency = Histogram(
            "streamcover_window_to_event_seconds", "Window close to event emit", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.events_out = Counter("streamcover_events_out", "Match events produced", ["kind"], registry=r)
        self.dlq = Counter("streamcover_dead_letters", "Records dead-lettered, by reason", ["reason"], registry=r)
        self.lag = Gauge("streamcover_consumer_lag", "Records behind the log end", ["partition"], registry=r)
        self.active_streams = Gauge("streamcover_active_streams", "Streams held in memory", registry=r)
        self.streams_rejected = Counter(
            "streamcover_streams_rejected", "New streams refused at the max_streams cap", registry=r
        )
        self.stream_cap_hit = Gauge(
            "streamcover_stream_cap_reached", "1 while the max_streams cap is reached", registry=r
        )
        self.evicted = Counter("streamcover_streams_evicted", "Idle streams evicted", registry=r)
        self.transactions = Counter("streamcover_transactions", "Committed transactions", registry=r)
        self.restored = Counter("streamcover_streams_restored", "Stream states restored", registry=r)
        # Per-stage CPU for the benchmark: off unless STREAMCOVER_MONITOR_PROFILE is set
        # (streamcover.monitor.profile).
        self.profile = StageProfile.from_env()


def serve(metrics: Metrics, host: str, port: int) -> int:
    """Start the /metrics HTTP endpoint in a daemon thread; returns the bound port."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return int(server.server_port)
