"""Playback-speed changes: tempo and pitch together, as a turntable, a sped-up re-upload or
a resampling editor does. The catalog embeds references from such renders too
(``catalog.reference_speeds``), and the calibration draws re-uploads with it."""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def change_speed(wave: np.ndarray, speed: float) -> np.ndarray:
    """Play ``wave`` ``speed`` times as fast: the duration is divided by ``speed`` and every
    pitch rises by ``12 * log2(speed)`` semitones. A time at ``t`` seconds in the result is
    at ``t * speed`` seconds in ``wave``."""
    from scipy.signal import resample_poly

    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
    frac = Fraction(speed).limit_denominator(1000)
    if frac == 1:
        return np.asarray(wave, dtype=np.float32).copy()
    return resample_poly(wave, frac.denominator, frac.numerator).astype(np.float32)
