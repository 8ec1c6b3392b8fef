"""P works x K versions batches that mix short clips and full tracks, cut into chunks.

A batch is a pure function of (seed, step): resuming at step s rebuilds exactly the
batches an uninterrupted run would have seen, so the "sampler RNG" in a checkpoint
is just the seed and the step. Chunks are cut with
``streamcover.audio.chunking.chunk_features``, the same function inference uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamcover.data.chunker import Chunker, default_chunker
from streamcover.data.tracks import TrackSet
from streamcover.train.augment import key_shift, stitch, time_stretch
from streamcover.train.config import AugmentConfig, DataConfig


@dataclass
class Batch:
    """Chunks of a batch of samples, grouped by chunk length.

    Full windows are all ``window`` frames long; a clip shorter than a window is one
    short chunk (kept short, as at inference), so chunks come in a few length groups
    that the encoder runs one pass each. ``owners[g][i]`` is the sample of chunk i of
    group g; the chunks of a sample are contiguous and in time order.
    """

    groups: list[np.ndarray]  # float32 [n_g, bins, T_g]
    owners: list[np.ndarray]  # int64 [n_g]
    labels: np.ndarray  # int64 [B] work index (TrackSet.labels)
    tracks: np.ndarray  # int64 [B] recording index
    is_clip: np.ndarray  # bool [B]

    @property
    def n_samples(self) -> int:
        return len(self.labels)

    @property
    def total_chunks(self) -> int:
        return sum(len(g) for g in self.groups)

    @property
    def n_chunks(self) -> np.ndarray:
        return np.bincount(np.concatenate(self.owners), minlength=self.n_samples)


class PKBatchSampler:
    """Draws P works and K versions of each; half the versions (by ``clip_fraction``) are clips."""

    def __init__(
        self,
        tracks: TrackSet,
        data: DataConfig,
        augment: AugmentConfig,
        seed: int,
        circular_pitch: bool,
        chunker: Chunker | None = None,
    ) -> None:
        self.tracks = tracks
        self.data = data
        self.augment = augment
        self.seed = seed
        self.circular_pitch = circular_pitch
        self.chunker = chunker or default_chunker()
        labels = tracks.labels
        self.by_label = [np.flatnonzero(labels == k) for k in range(int(labels.max()) + 1)]
        self.n_labels = len(self.by_label)
        if self.n_labels < 2:
            raise ValueError("PKBatchSampler needs at least 2 works in the training set")
        fps = tracks.frames_per_second
        self.window_frames = round(data.window_s * fps)
        self.hop_frames = data.hop_s * fps
        self.min_frames = math.ceil(data.min_s * fps - 1e-9)
        # The short-query lengths of the ByteCover3 protocol below one window: 6, 10, 15 s.
        self.short_buckets = sorted({self.min_frames, *(round(t * fps) for t in (10.0, 15.0)
                                                        if round(t * fps) < self.window_frames)})

    def rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, step])

    def batch(self, step: int) -> Batch:
        rng = self.rng(step)
        p = min(self.data.works_per_batch, self.n_labels)
        k = self.data.versions_per_work
        works = rng.choice(self.n_labels, size=p, replace=False)
        n_clip = round(k * self.data.clip_fraction)
        by_len: dict[int, tuple[list[np.ndarray], list[int]]] = {}
        labels: list[int] = []
        picked: list[int] = []
        clips: list[bool] = []
        for w in works:
            members = self.by_label[int(w)]
            chosen = rng.choice(members, size=k, replace=len(members) < k)
            clip_flags = np.zeros(k, dtype=bool)
            clip_flags[rng.permutation(k)[:n_clip]] = True
            for t, is_clip in zip(chosen, clip_flags, strict=True):
                feat = self._sample(int(t), bool(is_clip), members, rng)
                chunks, _ = self.chunker(
                    feat, self.tracks.frames_per_second, self.data.window_s,
                    self.data.hop_s, self.data.min_s,
                )
                if len(chunks) == 0:
                    continue  # too short to embed at inference either
                if not is_clip and len(chunks) > self.data.full_max_chunks:
                    chunks = chunks[: self.data.full_max_chunks]
                group = by_len.setdefault(int(chunks.shape[2]), ([], []))
                group[0].append(np.asarray(chunks, dtype=np.float32))
                group[1].extend([len(labels)] * len(chunks))
                labels.append(int(w))
                picked.append(int(t))
                clips.append(bool(is_clip))
        lengths = sorted(by_len, reverse=True)  # full windows first
        return Batch(
            groups=[np.concatenate(by_len[n][0], axis=0) for n in lengths],
            owners=[np.asarray(by_len[n][1], dtype=np.int64) for n in lengths],
            labels=np.asarray(labels, dtype=np.int64),
            tracks=np.asarray(picked, dtype=np.int64),
            is_clip=np.asarray(clips, dtype=bool),
        )

    def _sample(self, t: int, is_clip: bool, members: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        """Cut, stretch, transpose and stitch one sample of recording ``t``."""
        aug = self.augment
        fps = self.tracks.frames_per_second
        factor = 1.0
        if aug.tempo_prob > 0 and rng.random() < aug.tempo_prob:
            factor = float(rng.uniform(aug.tempo_min, aug.tempo_max))
        if is_clip:
            seconds = float(rng.uniform(self.data.clip_min_s, self.data.clip_max_s))
            out_frames = max(self.min_frames + 1, round(seconds * fps))
        else:
            out_frames = self.window_frames + math.ceil(
                (self.data.full_max_chunks - 1) * self.hop_frames)
        feat = self._crop(t, round(out_frames * factor), rng)
        if factor != 1.0:
            feat = time_stretch(feat, factor)
        if aug.stitch_prob > 0 and len(members) > 1 and rng.random() < aug.stitch_prob:
            others = members[members != t]
            other = int(rng.choice(others))
            o = self.tracks.feature(other)
            if factor != 1.0:
                o = time_stretch(o, factor)
            feat = stitch(feat, o, rng)
        if feat.shape[1] < self.window_frames:
            # Short clips snap to one of a few lengths so a batch has few chunk-length groups.
            fitting = [b for b in self.short_buckets if b <= feat.shape[1]]
            feat = feat[:, : fitting[-1] if fitting else feat.shape[1]]
        if aug.key_prob > 0 and rng.random() < aug.key_prob:
            n_bins = feat.shape[0]
            if self.circular_pitch:
                shift = int(rng.integers(1, n_bins))
            else:
                shift = int(rng.integers(-12, 13))
            feat = key_shift(feat, shift, self.circular_pitch)
        return feat

    def _crop(self, t: int, frames: int, rng: np.random.Generator) -> np.ndarray:
        n = self.tracks.n_frames(t)
        if n <= frames:
            return self.tracks.feature(t)
        start = int(rng.integers(0, n - frames + 1))
        return self.tracks.feature(t, start, start + frames)
