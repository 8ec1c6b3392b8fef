"""A set of recordings as feature matrices with work labels: what training and eval consume.

Both the SHS100K HPCP file and users' manifests become a ``TrackSet``, so the
sampler, the loop and the eval protocols never care where features came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrackSet:
    """Recordings (feature matrices ``[bins, T]``) and the work each is a version of.

    ``features[i]`` may be stored as uint8 (scaled by ``scale``) or float32, and may be
    stored time-major (``[T, bins]``) when ``time_major`` is set; ``feature(i)``
    always returns float32 ``[bins, T]``.
    """

    features: Sequence[np.ndarray]
    works: np.ndarray
    track_ids: list[str]
    frames_per_second: float
    scale: float = 1.0
    time_major: bool = False
    titles: list[str] | None = None
    _labels: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.works = np.asarray(self.works, dtype=np.int64)
        if len(self.features) != len(self.works) or len(self.track_ids) != len(self.works):
            raise ValueError(
                f"TrackSet: {len(self.features)} features, {len(self.works)} works and "
                f"{len(self.track_ids)} ids must have the same length"
            )

    def __len__(self) -> int:
        return len(self.works)

    @property
    def n_bins(self) -> int:
        f = self.features[0]
        return int(f.shape[1] if self.time_major else f.shape[0])

    def n_frames(self, i: int) -> int:
        f = self.features[i]
        return int(f.shape[0] if self.time_major else f.shape[1])

    def feature(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start:stop`` of recording ``i`` as float32 ``[bins, T]``."""
        f = self.features[i]
        f = f[start:stop] if self.time_major else f[:, start:stop]
        out = np.asarray(f, dtype=np.float32)
        if self.scale != 1.0:
            out = out * np.float32(self.scale)
        return np.ascontiguousarray(out.T if self.time_major else out)

    @property
    def labels(self) -> np.ndarray:
        """Works renumbered 0..W-1 (class indices for the classifiers)."""
        if self._labels is None:
            _, self._labels = np.unique(self.works, return_inverse=True)
        return self._labels

    @property
    def n_works(self) -> int:
        return len(np.unique(self.works))

    def subset(self, indices: Sequence[int] | np.ndarray) -> TrackSet:
        """The recordings at ``indices`` (labels are renumbered)."""
        idx = [int(i) for i in indices]
        return TrackSet(
            features=[self.features[i] for i in idx],
            works=self.works[idx],
            track_ids=[self.track_ids[i] for i in idx],
            frames_per_second=self.frames_per_second,
            scale=self.scale,
            time_major=self.time_major,
            titles=[self.titles[i] for i in idx] if self.titles is not None else None,
        )

    @classmethod
    def concat(cls, parts: Sequence[TrackSet]) -> TrackSet:
        """Several sources as one (e.g. SHS100K HPCP plus a rendered corpus).

        Works stay apart: each part's work ids are shifted past the previous parts'.
        Features are stored as the first part stores them (uint8 parts are quantised
        with its scale, as the SHS file is); frame rates and bin counts must agree.
        """
        if not parts:
            raise ValueError("TrackSet.concat needs at least one part")
        first = parts[0]
        feats: list[np.ndarray] = []
        works: list[np.ndarray] = []
        ids: list[str] = []
        titles: list[str] = []
        offset = 0
        for n, part in enumerate(parts):
            if abs(part.frames_per_second - first.frames_per_second) > 1e-3:
                raise ValueError(
                    f"TrackSet.concat: part {n} has {part.frames_per_second:.4f} frames/s, "
                    f"part 0 has {first.frames_per_second:.4f}; use one front end for both")
            if part.n_bins != first.n_bins:
                raise ValueError(f"TrackSet.concat: part {n} has {part.n_bins} bins, "
                                 f"part 0 has {first.n_bins}")
            same = part.scale == first.scale and part.time_major == first.time_major
            for i in range(len(part)):
                if same:
                    feats.append(part.features[i])
                    continue
                x = part.feature(i)
                if first.scale != 1.0:
                    x = np.clip(np.rint(x / first.scale), 0, 255).astype(np.uint8)
                feats.append(np.ascontiguousarray(x.T) if first.time_major else x)
            w = np.asarray(part.works, dtype=np.int64)
            works.append(w - w.min() + offset if len(w) else w)
            offset = int(works[-1].max()) + 1 if len(w) else offset
            ids.extend(part.track_ids)
            titles.extend(part.titles if part.titles is not None else [""] * len(part))
        return cls(features=feats, works=np.concatenate(works), track_ids=ids,
                   frames_per_second=first.frames_per_second, scale=first.scale,
                   time_major=first.time_major, titles=titles)

    def select_works(self, works: Sequence[int] | np.ndarray) -> TrackSet:
        """The recordings of the given works."""
        keep = np.isin(self.works, np.asarray(list(works), dtype=np.int64))
        return self.subset(np.flatnonzero(keep))
