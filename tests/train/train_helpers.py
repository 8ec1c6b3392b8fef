"""Helpers for the training tests: SHS-format files with synthetic versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_ENCODER = {"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "stem_channels": 8,
                "embed_dim": 16}


def write_shs_npz(path: Path, recordings: list[tuple[int, int, np.ndarray]]) -> Path:
    """Write (clique, version, feat uint8 [T, 12]) rows in the shared file's format."""
    feats = [r[2] for r in recordings]
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in feats])]).astype(np.int64)
    np.savez(path, feat=np.concatenate(feats).astype(np.uint8), offsets=offsets,
             clique=np.asarray([r[0] for r in recordings], dtype=np.int32),
             version=np.asarray([r[1] for r in recordings], dtype=np.int32))
    return path


def synthetic_recordings(n_works: int, versions: int, seed: int = 0,
                         frames: tuple[int, int] = (90, 200)) -> list[tuple[int, int, np.ndarray]]:
    """Versions of a work share a chroma 'melody' (rolled to random keys, noisy)."""
    rng = np.random.default_rng(seed)
    out = []
    for w in range(n_works):
        theme = rng.random((24, 12)) ** 3
        for v in range(versions):
            t = int(rng.integers(*frames))
            idx = (np.arange(t) * rng.uniform(0.8, 1.2)).astype(int) % len(theme)
            feat = np.roll(theme[idx], int(rng.integers(0, 12)), axis=1)
            feat = feat + 0.2 * rng.random(feat.shape)
            feat = feat / feat.max(axis=1, keepdims=True)
            out.append((100 + w, v, (feat * 255).astype(np.uint8)))
    return out
