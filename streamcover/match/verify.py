"""Stage 3 of the search: verify the MaxMean leaders by aligning feature sequences.

Stage 2 (MaxMean over chunk embeddings) ranks candidates well but separates real covers
from unrelated music poorly: it compares bags of chunks and ignores their order. Stage 3
aligns the query's feature sequence against each leader's stored features
(:func:`streamcover.match.align.align_candidates`: Qmax with OTI transposition) and fuses
the two scores into one detection score in (0, 1) (:func:`streamcover.match.fusion.fuse`),
which is what upload decisions threshold.

Only the ``candidates`` best references by MaxMean are aligned, so a window's cost is
bounded; the others get the fused score of an alignment of 0, which keeps them below any
verified leader of higher MaxMean. A reference without stored features is scored the same
way (its alignment cannot be checked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from streamcover.match.align import FRAMES_PER_SECOND, align_candidates
from streamcover.match.fusion import DEFAULT_PARAMS, FusionParams, fuse

if TYPE_CHECKING:
    from streamcover.config import VerifySettings

__all__ = ["Verification", "Verifier", "quantise_features"]


def quantise_features(features: np.ndarray) -> np.ndarray:
    """A front end's frames [bins, T] in 0..1 as uint8 0..255, as a stream keeps its query
    for stage 3 (a quarter of float32; the alignment reads uint8 as value / 255)."""
    x = np.nan_to_num(np.asarray(features, np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class Verification:
    """Stage-3 result for candidates in the order given."""

    fused: np.ndarray  # float32 [n], the detection score in (0, 1)
    align: np.ndarray  # float32 [n], the alignment score in [0, 1]; NaN: not aligned
    # (query span, reference span) in seconds of the aligned path; None: not aligned
    spans: list[tuple[tuple[float, float], tuple[float, float]] | None]


class Verifier:
    """Aligns a query against its stage-2 leaders and fuses the scores (module docstring)."""

    def __init__(self, candidates: int = 8, *, fusion: FusionParams = DEFAULT_PARAMS,
                 max_query_seconds: float = 480.0, fps: float = FRAMES_PER_SECOND) -> None:
        if candidates < 1:
            raise ValueError(f"stage 3 needs at least one candidate, got {candidates}")
        self.candidates = candidates
        self.fusion = fusion
        self.fps = fps
        self.max_query_frames = max(1, round(max_query_seconds * fps))

    @classmethod
    def from_settings(cls, settings: VerifySettings) -> Verifier | None:
        """The verifier for the ``verify`` settings, or None when stage 3 is off."""
        if not settings.enabled:
            return None
        return cls(settings.candidates, max_query_seconds=settings.max_query_seconds)

    def warm_up(self) -> None:
        """Compile the alignment kernel now (numba; seconds on first use), not on a stream's
        first window."""
        rng = np.random.default_rng(0)
        align_candidates(rng.random((12, 40), dtype=np.float32),
                         [rng.integers(0, 256, (40, 12), dtype=np.uint8)])

    def unverified(self, maxmean: np.ndarray) -> np.ndarray:
        """The fused score of candidates that were not aligned (an alignment of 0)."""
        mm = np.nan_to_num(np.asarray(maxmean, np.float64), nan=0.0)
        return np.asarray(fuse(mm, np.zeros_like(mm), self.fusion), np.float32)

    def verify(self, query_features: np.ndarray, references: Sequence[np.ndarray | None],
               maxmean: np.ndarray) -> Verification:
        """Fused scores of candidates with stage-2 scores ``maxmean`` [n].

        ``query_features``: the front end's frames [bins, T] (float, 0..1) from the start
        of the query; ``references[i]``: candidate i's stored frames [T_i, bins] (uint8), or
        None when the catalog holds none. Only the first ``candidates`` are aligned: pass
        them best first.
        """
        mm = np.asarray(maxmean, np.float64).reshape(-1)
        if mm.shape[0] != len(references):
            raise ValueError(f"{mm.shape[0]} scores for {len(references)} references")
        fused = self.unverified(mm)
        align = np.full(mm.shape[0], np.nan, np.float32)
        spans: list[tuple[tuple[float, float], tuple[float, float]] | None] = [None] * mm.shape[0]
        todo = [i for i in range(min(self.candidates, mm.shape[0])) if references[i] is not None]
        if not todo or query_features.ndim != 2 or query_features.shape[1] == 0:
            return Verification(fused, align, spans)
        q = query_features[:, : self.max_query_frames]  # uint8 or float: align scales uint8
        found = align_candidates(q, [references[i] for i in todo],  # type: ignore[misc]
                                 max_query_frames=self.max_query_frames)
        for i, a in zip(todo, found, strict=True):
            align[i] = a.score
            fused[i] = np.float32(fuse(float(np.nan_to_num(mm[i], nan=0.0)), a.score, self.fusion))
            if a.query_span[1] > a.query_span[0]:
                spans[i] = ((a.query_span[0] / self.fps, a.query_span[1] / self.fps),
                            (a.reference_span[0] / self.fps, a.reference_span[1] / self.fps))
        return Verification(fused, align, spans)
