"""Turn recordings (feature matrices) into sets of L2-normalised vectors for the protocols.

``EncoderEmbedder`` cuts 20 s chunks with the inference chunker and runs the encoder's
PCA-FC embedding, as the catalog and the monitor do. Baselines live in ``baselines.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from streamcover.data.chunker import Chunker, default_chunker

if TYPE_CHECKING:
    import torch

    from streamcover.model.net import CoverEncoder


class EncoderEmbedder:
    """Chunk, encode and L2-normalise; one ``[n_chunks, embed_dim]`` array per recording."""

    def __init__(self, model: CoverEncoder, frames_per_second: float, *, window_s: float = 20.0,
                 hop_s: float = 10.0, min_s: float = 6.0, device: torch.device | str = "cpu",
                 batch_size: int = 512, chunker: Chunker | None = None) -> None:
        self.model = model
        self.fps = frames_per_second
        self.window_s = window_s
        self.hop_s = hop_s
        self.min_s = min_s
        self.device = device
        self.batch_size = batch_size
        self.chunker = chunker or default_chunker()

    def chunks(self, feat: np.ndarray) -> np.ndarray:
        chunks, _ = self.chunker(feat, self.fps, self.window_s, self.hop_s, self.min_s)
        return np.asarray(chunks, dtype=np.float32)

    def embed_chunks(self, chunks: np.ndarray) -> np.ndarray:
        """``[N, bins, T]`` chunks -> ``[N, D]`` unit vectors, in eval mode without grad."""
        import torch
        import torch.nn.functional as F

        was_training = self.model.training
        self.model.eval()
        out: list[np.ndarray] = []
        try:
            with torch.no_grad():
                for lo in range(0, len(chunks), self.batch_size):
                    x = torch.from_numpy(chunks[lo : lo + self.batch_size]).to(self.device)
                    emb = self.model(x.unsqueeze(1)).embedding.float()
                    out.append(F.normalize(emb, dim=-1).cpu().numpy())
        finally:
            self.model.train(was_training)
        if not out:
            return np.zeros((0, self.model.cfg.embed_dim), dtype=np.float32)
        return np.concatenate(out, axis=0)

    def __call__(self, feats: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Chunk every recording; encode chunks grouped by length (short clips stay short)."""
        per = [self.chunks(f) for f in feats]
        dim = self.model.cfg.embed_dim
        out = [np.zeros((len(c), dim), dtype=np.float32) for c in per]
        lengths = sorted({int(c.shape[2]) for c in per if len(c)})
        for n in lengths:
            members = [i for i, c in enumerate(per) if len(c) and c.shape[2] == n]
            vecs = self.embed_chunks(np.concatenate([per[i] for i in members], axis=0))
            lo = 0
            for i in members:
                out[i] = vecs[lo : lo + len(per[i])]
                lo += len(per[i])
        return out
