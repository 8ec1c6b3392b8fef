"""Feature-domain augmentations that imitate how covers differ: key, tempo, arrangement.

All work on float32 ``[bins, T]`` matrices and draw randomness from the caller's
``numpy.random.Generator`` so a batch is a pure function of (seed, step).
"""

from __future__ import annotations

import numpy as np


def key_shift(feat: np.ndarray, shift: int, circular: bool) -> np.ndarray:
    """Transpose by ``shift`` pitch bins.

    HPCP is a pitch-class profile, so a key change is a circular roll of its 12 bins.
    A CQT is a pitch axis with edges: bins shifted past an edge are dropped and the
    vacated bins are zero.
    """
    if shift == 0:
        return feat
    if circular:
        return np.roll(feat, shift, axis=0)
    out = np.zeros_like(feat)
    if abs(shift) >= feat.shape[0]:
        return out
    if shift > 0:
        out[shift:] = feat[:-shift]
    else:
        out[:shift] = feat[-shift:]
    return out


def time_stretch(feat: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster: T frames become round(T / factor), by linear interpolation."""
    if factor <= 0:
        raise ValueError(f"time_stretch: factor must be > 0, got {factor}")
    n_in = feat.shape[1]
    n_out = max(1, round(n_in / factor))
    if n_out == n_in:
        return feat
    if n_in == 1:
        return np.repeat(feat, n_out, axis=1)
    pos = np.linspace(0.0, n_in - 1, n_out, dtype=np.float64)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (pos - lo).astype(np.float32)
    return np.ascontiguousarray(feat[:, lo] * (1.0 - w) + feat[:, hi] * w)


def stitch(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CASPERNET spectrum stitching: the head of ``a`` followed by a segment of ``b``.

    ``a`` and ``b`` are versions of the same work; the result keeps ``a``'s length so
    the sample's duration (clip vs full track) is unchanged.
    """
    n = a.shape[1]
    if n < 2 or b.shape[1] < 1:
        return a
    cut = int(rng.integers(1, n))
    need = n - cut
    if b.shape[1] >= need:
        start = int(rng.integers(0, b.shape[1] - need + 1))
        tail = b[:, start : start + need]
    else:
        reps = -(-need // b.shape[1])
        tail = np.tile(b, (1, reps))[:, :need]
    return np.ascontiguousarray(np.concatenate([a[:, :cut], tail], axis=1))
