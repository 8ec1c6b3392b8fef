"""The chroma 2D Fourier-transform-magnitude baseline (Bertin-Mahieux & Ellis, 2012).

Beat-free variant on HPCP frames: every 75-frame patch (about 35 s at 2.15 fps) of
the 12-bin chroma, raised to the power 1.96 to sharpen it, is 2D-FFT'd; the magnitude
is invariant to key (circular pitch shift) and to time offset. The recording vector is
the median magnitude over patches, optionally projected by PCA, then L2-normalised and
compared by cosine (the paper uses Euclidean distance after PCA; cosine on unit vectors
ranks the same as Euclidean on unit vectors). Patches come with a hop of ``hop`` frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FTM_PATCH_FRAMES = 75
FTM_POWER = 1.96


def ftm2d(feat: np.ndarray, patch: int = FTM_PATCH_FRAMES, hop: int = 1,
          power: float = FTM_POWER) -> np.ndarray:
    """Median 2D-FFT magnitude over all ``patch``-frame windows of ``feat`` [bins, T] -> [bins*patch].

    Recordings shorter than a patch are zero-padded to one patch.
    """
    if feat.ndim != 2 or feat.shape[1] == 0:
        raise ValueError(f"ftm2d needs a non-empty [bins, T] matrix, got {feat.shape}")
    x = np.power(np.clip(feat.astype(np.float64), 0.0, None), power)
    if x.shape[1] < patch:
        x = np.pad(x, ((0, 0), (0, patch - x.shape[1])))
    starts = np.arange(0, x.shape[1] - patch + 1, hop)
    windows = np.lib.stride_tricks.sliding_window_view(x, patch, axis=1)[:, starts]  # [bins, P, patch]
    mags = np.abs(np.fft.fft2(np.transpose(windows, (1, 0, 2)), axes=(1, 2)))  # [P, bins, patch]
    return np.median(mags, axis=0).reshape(-1).astype(np.float32)


class Ftm2dEmbedder:
    """One 2DFTM vector per recording (a set of size one), optional PCA fitted by ``fit_pca``."""

    def __init__(self, patch: int = FTM_PATCH_FRAMES, hop: int = 1, pca_dims: int = 0) -> None:
        self.patch = patch
        self.hop = hop
        self.pca_dims = pca_dims
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None

    def raw(self, feats: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([ftm2d(f, self.patch, self.hop) for f in feats])

    def fit_pca(self, feats: Sequence[np.ndarray]) -> None:
        """Fit the PCA projection on (training) recordings; no-op when ``pca_dims`` is 0."""
        if self.pca_dims <= 0:
            return
        x = self.raw(feats).astype(np.float64)
        self.mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.components = vt[: self.pca_dims]

    def __call__(self, feats: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = self.raw(feats).astype(np.float64)
        if self.components is not None and self.mean is not None:
            x = (x - self.mean) @ self.components.T
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return [row[None, :].astype(np.float32) for row in x]
