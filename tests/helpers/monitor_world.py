"""A small, fully real test world: synthetic works, a catalog built with the real front end,
encoder and faiss index, and settings pointing at it.

What this proves and what it does not: the encoder is the *untrained* CoverEncoder with a
fixed seed (a trained model may not exist when the tests run). An untrained CNN maps
identical audio to identical embeddings and near-identical audio close, but it barely
separates unrelated music (cosine similarities of unrelated chunks are ~0.99 too). So the
tests stream *near-copies* of catalogued works (same score and key, other level and a
little noise, resampled on the way) and use a threshold measured for this encoder
(TEST_THRESHOLD). They prove that audio goes the whole way through Kafka, the feature and
embedding pipeline, the search and the decisions to the right reference with the right
timing and delivery guarantees — not that the model recognises covers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consumers.media import Score, Version, make_score, render
from streamcover.audio.resample import StreamResampler
from streamcover.config import (
    AudioSettings,
    KafkaSettings,
    MatchSettings,
    MonitorSettings,
    Settings,
    VerifySettings,
)

WIRE_RATE = 22_050
SEED = 1234
# Measured for the untrained seed-1234 compact HPCP encoder (see the
# docstring above): copies score ≥ 0.9995 per chunk, unrelated works ≤ 0.997.
TEST_THRESHOLD = 0.9985
TEST_RELEASE = 0.9975


def encoder_cls() -> Any:
    inference = pytest.importorskip("streamcover.model.inference", reason="model inference not built yet")
    return inference.Encoder


def untrained_encoder(seed: int = SEED, settings: Settings | None = None) -> Any:
    from streamcover.model.config import EncoderConfig

    return encoder_cls().untrained(EncoderConfig.compact("hpcp"), seed=seed, device="cpu",
                                   settings=settings)


@dataclass
class World:
    root: Path
    settings: Settings
    scores: dict[str, Score]
    encoder: Any
    model_path: Path
    waves: dict[str, np.ndarray] = field(default_factory=dict)

    def copy_of(self, ref: str, seconds: float | None = None, noise_seed: int = 7) -> np.ndarray:
        """A near-copy of a catalogued work at the wire rate (other level, faint noise)."""
        wave = render(self.scores[ref], Version(gain=0.35, noise=0.002, seed=noise_seed), WIRE_RATE,
                      seconds=seconds)
        return wave

    def env(self, settings: Settings | None = None) -> dict[str, str]:
        """Environment for a monitor subprocess with these settings."""
        s = settings or self.settings
        k = s.kafka
        env = {
            "STREAMCOVER_KAFKA__BOOTSTRAP_SERVERS": k.bootstrap_servers,
            "STREAMCOVER_KAFKA__AUDIO_TOPIC": k.audio_topic,
            "STREAMCOVER_KAFKA__MATCH_TOPIC": k.match_topic,
            "STREAMCOVER_KAFKA__DEAD_LETTER_TOPIC": k.dead_letter_topic,
            "STREAMCOVER_KAFKA__STATE_TOPIC": k.state_topic,
            "STREAMCOVER_KAFKA__GROUP_ID": k.group_id,
            "STREAMCOVER_KAFKA__TRANSACTIONAL_ID_PREFIX": k.transactional_id_prefix,
            "STREAMCOVER_KAFKA__AUDIO_PARTITIONS": str(k.audio_partitions),
            "STREAMCOVER_CATALOG__PATH": str(s.catalog.path),
            "STREAMCOVER_ENCODER__MODEL_PATH": str(self.model_path),
            "STREAMCOVER_ENCODER__THREADS": "1",
            "STREAMCOVER_MATCH__THRESHOLD": str(s.match.threshold),
            "STREAMCOVER_MATCH__RELEASE_THRESHOLD": str(s.match.release_threshold),
            "STREAMCOVER_MATCH__ONE_CHUNK_THRESHOLD": str(s.match.one_chunk_threshold),
            "STREAMCOVER_MATCH__LIVE_THRESHOLD": str(s.match.live_threshold),
            "STREAMCOVER_MATCH__CHUNK_THRESHOLD": str(s.match.chunk_threshold),
            "STREAMCOVER_VERIFY__ENABLED": str(s.verify.enabled).lower(),
            "STREAMCOVER_MATCH__MIN_CHUNKS": str(s.match.min_chunks),
            "STREAMCOVER_MATCH__CHANGE_MARGIN": str(s.match.change_margin),
            "STREAMCOVER_MATCH__UPDATE_MIN_DELTA": str(s.match.update_min_delta),
            "STREAMCOVER_MONITOR__METRICS_PORT": "0",
            "STREAMCOVER_LOG_FORMAT": "json",
        }
        return env


def test_settings(kafka: KafkaSettings, catalog: Path, model_path: Path, **match: Any) -> Settings:
    m: dict[str, Any] = dict(threshold=TEST_THRESHOLD, one_chunk_threshold=TEST_THRESHOLD,
                             release_threshold=TEST_RELEASE,
                             live_threshold=TEST_THRESHOLD, chunk_threshold=TEST_RELEASE, min_chunks=1,
                             change_margin=0.002, update_min_delta=0.0005,
                             horizon_chunks=6)
    m.update(match)
    return Settings(
        kafka=kafka,
        audio=AudioSettings(wire_sample_rate=WIRE_RATE),
        match=MatchSettings(**m),
        monitor=MonitorSettings(metrics_port=0, idle_evict_seconds=600),
        catalog={"path": catalog},  # type: ignore[arg-type]
        # The untrained encoder's near-identity thresholds are on MaxMean's scale.
        verify=VerifySettings(enabled=False),
        encoder={"model_path": model_path, "batch_size": 32, "max_batch_wait_ms": 50, "threads": 1},  # type: ignore[arg-type]
    )


def reference_chunks(wave_wire: np.ndarray, frontend: Any) -> tuple[np.ndarray, np.ndarray]:
    """Reference chunks the way a catalog is built: whole-file features, chunking rules."""
    from streamcover.audio.chunking import chunk_features

    wave = StreamResampler(WIRE_RATE, frontend.sample_rate).push(
        np.concatenate([wave_wire, np.zeros(WIRE_RATE // 10, dtype=np.float32)])
    )[: len(wave_wire) * frontend.sample_rate // WIRE_RATE]
    feat = frontend.features(wave)
    return chunk_features(feat, frontend.frames_per_second)


def build_catalog(path: Path, encoder: Any, works: dict[str, Score], settings: Settings) -> None:
    """The real catalog: store + HNSW snapshot, references embedded with ``encoder``."""
    from streamcover.audio.frontend import make_frontend
    from streamcover.catalog.factory import IndexParams
    from streamcover.catalog.records import ReferenceInput
    from streamcover.catalog.snapshot import build_snapshot
    from streamcover.catalog.store import Catalog

    fe = make_frontend(settings.frontend)
    refs = []
    for rid, score in works.items():
        wave = render(score, Version(), WIRE_RATE)
        chunks, starts = reference_chunks(wave, fe)
        vecs = encoder.embed_chunks(chunks)
        refs.append(ReferenceInput(id=rid, vectors=vecs, starts=starts, title=score.title,
                                   artist="Test Ensemble", duration=len(wave) / WIRE_RATE))
    with Catalog.open(path, "a", model_id=encoder.model_id, dim=int(refs[0].vectors.shape[1])) as cat:
        cat.add_references(refs, encoder.model_id)
        build_snapshot(cat, IndexParams.from_settings(settings.catalog))


def make_world(root: Path, kafka: KafkaSettings, n_works: int = 4, seconds: float = 70.0,
               **match: Any) -> World:
    from streamcover.model.checkpoint import save_checkpoint

    model_path = root / "test-encoder.pt"
    settings = test_settings(kafka, root / "catalog", model_path, **match)
    enc = untrained_encoder(settings=settings)
    save_checkpoint(model_path, enc.model, enc.cfg, enc.model_id, None)
    scores = {f"work-{i}": make_score(100 + i, seconds, title=f"Test Work {i}") for i in range(n_works)}
    # A catalogued work shorter than one window (a jingle): its only chunk is a short one.
    scores["jingle"] = make_score(200, 12.0, title="Test Jingle")
    build_catalog(root / "catalog", enc, scores, settings)
    return World(root, settings, scores, enc, model_path)
