"""Cut feature sequences into the fixed windows the encoder embeds (ByteCover3 local features).

Rules (all in feature frames at ``fps`` frames per second; W = round(window_s·fps),
H = round(hop_s·fps), M = floor(min_s·fps), the pooled frames a clip of exactly
min_s seconds yields — 12 for 6 s at 2.1533 fps):

* **Full windows** start at 0, H, 2H, … and are kept while they fit: start + W ≤ T.
* **Tail.** If T > W and the audio after the end of the last full window is at least
  ``min_s`` long (T − end ≥ M), one more window aligned to the end, [T − W, T), is added,
  so that up to ``min_s`` of the end is covered at no cost to the window length. Shorter
  tails are already inside the last full window's 10 s of overlap, minus < min_s.
* **Short clips** (W > T ≥ M): one chunk of the whole clip, kept short (T frames, not
  padded): the CNN ends in GeM pooling over time, which accepts any T, and zero padding
  would drag the generalized mean and the chunk maximum towards silence. ``short="tile"``
  repeats the clip up to W frames instead, for callers that need fixed shapes.
* **Too short** (T < M): no chunk (an empty [0, bins, W] array); callers report it.
* **Normalisation.** Each chunk is divided by its maximum (all-zero chunks stay zero), as
  the sony/clews ByteCover3 re-implementation does for the CQT; HPCP rows are already
  max-normalised, so for HPCP this only matters for all-zero chunks.

Start times are the true starts ``start_frame / fps`` (a 10 s hop at 2.1533 fps is 22
frames, 10.22 s). The monitor cuts a stream's windows with the same :class:`ChunkGeometry`
(``streamcover.monitor.stream``) and yields exactly the chunks of ``chunk_features`` on the
concatenated frames (tests/monitor/test_stream.py, with hypothesis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["ChunkGeometry", "chunk_features", "normalize_chunks"]

ShortMode = Literal["keep", "tile"]


@dataclass(frozen=True)
class ChunkGeometry:
    """Window, hop and minimum length in frames for a given frame rate."""

    fps: float
    window: int
    hop: int
    min_frames: int

    @classmethod
    def make(
        cls, fps: float, window_s: float = 20.0, hop_s: float = 10.0, min_s: float = 6.0
    ) -> ChunkGeometry:
        if fps <= 0:
            raise ValueError(f"frames_per_second must be positive, got {fps}")
        if not 0 < hop_s <= window_s:
            raise ValueError(f"need 0 < hop_s ({hop_s}) <= window_s ({window_s})")
        if not 0 < min_s <= window_s:
            raise ValueError(f"need 0 < min_s ({min_s}) <= window_s ({window_s})")
        window = max(1, round(window_s * fps))
        hop = max(1, min(window, round(hop_s * fps)))
        min_frames = max(1, min(window, math.floor(min_s * fps + 1e-6)))
        return cls(fps=fps, window=window, hop=hop, min_frames=min_frames)

    def starts(self, n_frames: int) -> tuple[list[int], int | None]:
        """Start frames of the full windows, and the tail/short start (or None)."""
        w, h, m = self.window, self.hop, self.min_frames
        if n_frames < w:
            return [], (0 if n_frames >= m else None)
        full = list(range(0, n_frames - w + 1, h))
        end = full[-1] + w
        tail = n_frames - w if n_frames - end >= m else None
        return full, tail


def normalize_chunks(chunks: np.ndarray) -> np.ndarray:
    """Divide each chunk [N, bins, T] by its own maximum; all-zero chunks stay zero."""
    if chunks.shape[0] == 0:
        return chunks.astype(np.float32, copy=False)
    peak = chunks.reshape(chunks.shape[0], -1).max(axis=1)
    scale = np.where(peak > 0, 1.0 / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)
    return (chunks * scale[:, None, None]).astype(np.float32, copy=False)


def _tile(clip: np.ndarray, length: int) -> np.ndarray:
    reps = -(-length // clip.shape[-1])
    return np.tile(clip, (1, reps))[:, :length]


def chunk_features(
    feat: np.ndarray,
    frames_per_second: float,
    window_s: float = 20.0,
    hop_s: float = 10.0,
    min_s: float = 6.0,
    *,
    normalize: bool = True,
    short: ShortMode = "keep",
) -> tuple[np.ndarray, np.ndarray]:
    """Chunks [N, bins, Tw] and their start times in seconds [N] (rules in the module doc)."""
    if feat.ndim != 2:
        raise ValueError(f"expected features [bins, T], got shape {feat.shape}")
    geo = ChunkGeometry.make(frames_per_second, window_s, hop_s, min_s)
    bins, n = feat.shape
    full, tail = geo.starts(n)
    if n < geo.window:
        if tail is None:
            return (
                np.zeros((0, bins, geo.window), dtype=np.float32),
                np.zeros(0, dtype=np.float64),
            )
        clip = feat.astype(np.float32, copy=False)
        if short == "tile":
            clip = _tile(clip, geo.window)
        chunks = clip[None].copy()
        starts = [0]
    else:
        starts = full + ([tail] if tail is not None else [])
        chunks = np.stack([feat[:, s : s + geo.window] for s in starts]).astype(np.float32)
    if normalize:
        chunks = normalize_chunks(chunks)
    return chunks, np.asarray(starts, dtype=np.float64) / frames_per_second


# A chunk at least this share of whose frames are digital silence (every bin 0) embeds
# close to the all-silent chunk, which is one fixed vector: 0.54 cosine to it at 30 of 43
# frames silent, 0.40 at 20 (the shipped model on real music).
SILENT_FRAME_SHARE = 0.5


def silent_chunks(chunks: np.ndarray, share: float = SILENT_FRAME_SHARE) -> np.ndarray:
    """Which chunks [N, bins, T] are mostly digital silence: at least ``share`` of their
    frames are zero in every bin. The catalog stores none of them, since every silent
    stretch of any stream would match them exactly."""
    if chunks.ndim != 3:
        raise ValueError(f"expected chunks [N, bins, T], got shape {chunks.shape}")
    if chunks.shape[0] == 0 or chunks.shape[2] == 0:
        return np.zeros(chunks.shape[0], dtype=bool)
    zero = chunks.max(axis=1) <= 0
    return np.asarray(zero.mean(axis=1) >= share)

