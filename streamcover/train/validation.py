"""Validation during training: the figures that pick ``best.pt`` and drive the lr schedule.

It runs the evaluation code (``streamcover.eval``) on held-out works, but keeps
ByteCover3's shorter-first rule so runs stay comparable with their earlier logs (retrieval
and ``streamcover eval`` score length-weighted).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from streamcover.data.chunker import Chunker
from streamcover.data.tracks import TrackSet
from streamcover.eval.embedders import EncoderEmbedder
from streamcover.eval.protocols import ChunkSets, full_length, short_queries
from streamcover.model.net import CoverEncoder
from streamcover.train.config import TrainConfig


@dataclass
class ValResult:
    step: int
    map_full: float
    p10_full: float
    mr1_full: float
    map_30s: float

    @property
    def score(self) -> float:
        """Model selection: the mean of full-length and 30 s mAP, the two targets."""
        return 0.5 * (self.map_full + self.map_30s)


def validate(model: CoverEncoder, tracks: TrackSet, cfg: TrainConfig, device: torch.device,
             step: int, chunker: Chunker | None = None) -> ValResult:
    """Full-length and 30 s-query mAP on held-out works (MaxMean over chunk embeddings)."""
    emb = EncoderEmbedder(model, tracks.frames_per_second, window_s=cfg.data.window_s,
                          hop_s=cfg.data.hop_s, min_s=cfg.data.min_s, device=device,
                          chunker=chunker)
    refs = ChunkSets.from_list(emb([tracks.feature(i) for i in range(len(tracks))]))
    # Validation keeps ByteCover3's shorter-first rule, so runs stay comparable with their
    # earlier logs and plateau schedule (retrieval and `streamcover eval` score length-weighted).
    full, _ = full_length(refs, tracks.works, rule="shorter_first")
    short = short_queries(emb, tracks, refs, seconds=(30.0,), seed=cfg.seed, rule="shorter_first")
    return ValResult(step, full.map, full.p_at_10, full.mr1, short[30.0].map)
