"""Tuning-robust chroma: pick, frame by frame, the HPCP phase whose bins the music sits on.

A 12-bin HPCP puts bin centres on the semitones of a 440 Hz reference, with a ±2/3-semitone
window. Music that sits about half a semitone off that grid (a re-upload played 3 % fast or
slow, an instrument tuned to 427 Hz) spreads every note over two bins, and the encoder's
embedding of such chroma barely resembles the in-tune reference's (on real recordings a
60 s excerpt at 0.97× speed scored a median MaxMean of 0.33 against its reference, 0.93
unchanged). The front end therefore computes the HPCP at ``phases`` references,
``440 · 2^(k / (12·phases))`` Hz for k = 0 … phases − 1 (with 2 phases: on the semitones and
half-way between them), and this fold keeps one of them per pooled frame.

The choice is causal and deterministic, so a stream and the same audio read offline give the
same frames: each pooled frame's *spread* under each phase, the sum of its unit-max profile
(one sharp bin per note gives a small sum, a note split over two bins a large one), is summed
over the last ``memory`` frames (20 s at the defaults), and the fold moves to another phase
only when that phase's sum is lower than the current one's by more than ``hysteresis``. It
starts on phase 0, the shared data set's exact recipe, so in-tune music keeps the features
the model was trained on. The state (current phase and recent spreads) is small and is
checkpointed with the stream (``state``/``from_state``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_HYSTERESIS", "DEFAULT_MEMORY_FRAMES", "TuningFold"]

DEFAULT_MEMORY_FRAMES = 43  # 20 s of pooled frames at 2.1533 frames/s
DEFAULT_HYSTERESIS = 0.03  # a phase must be 3 % less spread than the current one to take over


class TuningFold:
    """Fold pooled frames ``[T, phases·bins]`` (phase-major) to ``[T, bins]``, causally."""

    def __init__(self, phases: int, bins: int, *, memory: int = DEFAULT_MEMORY_FRAMES,
                 hysteresis: float = DEFAULT_HYSTERESIS) -> None:
        if phases < 1 or bins < 1 or memory < 1 or not 0 <= hysteresis < 1:
            raise ValueError(f"TuningFold: bad phases={phases}, bins={bins}, memory={memory}, "
                             f"hysteresis={hysteresis}")
        self.phases = phases
        self.bins = bins
        self.memory = memory
        self.hysteresis = hysteresis
        self.phase = 0
        # The last ``memory`` frames' spreads, oldest first, the newest in the last row; the
        # sums are recomputed from it each frame, so a restored fold decides bit for bit alike.
        self._recent = np.zeros((memory, phases), dtype=np.float32)
        self._count = 0
        self._hold = 0  # frames still to fold without updating the state (see ``hold``)

    def __call__(self, pooled: np.ndarray) -> np.ndarray:
        """The kept phase of each frame, in order; the state moves on by those frames."""
        x = np.asarray(pooled, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.phases * self.bins:
            raise ValueError(f"TuningFold expects frames [T, {self.phases * self.bins}], "
                             f"got shape {x.shape}")
        out = np.empty((x.shape[0], self.bins), dtype=np.float32)
        if self.phases == 1:
            out[:] = x
            return out
        spread = x.reshape(x.shape[0], self.phases, self.bins).sum(axis=2, dtype=np.float64)
        for t in range(x.shape[0]):
            if self._hold:
                self._hold -= 1
            else:
                self._update(spread[t])
            k = self.phase * self.bins
            out[t] = x[t, k : k + self.bins]
        return out

    def _update(self, spread: np.ndarray) -> None:
        self._recent[:-1] = self._recent[1:]
        self._recent[-1] = spread
        self._count = min(self.memory, self._count + 1)
        sums = self._recent[self.memory - self._count :].sum(axis=0, dtype=np.float64)
        best = int(np.argmin(sums))
        if best != self.phase and sums[best] < sums[self.phase] * (1.0 - self.hysteresis):
            self.phase = best

    def hold(self, frames: int) -> None:
        """Fold the next ``frames`` frames with the current phase but leave the state as it is:
        a restored stream recomputes (and discards) frames the checkpoint already counted."""
        self._hold = max(0, int(frames))

    # ---- checkpoint -------------------------------------------------------------------
    def state(self) -> tuple[int, bytes]:
        """(phase, recent spreads as float32 [n, phases] bytes) for a stream checkpoint."""
        if self.phases == 1 or not self._count:
            return self.phase, b""
        return self.phase, self._recent[self.memory - self._count :].astype("<f4").tobytes()

    def restore(self, phase: int, recent: bytes) -> None:
        """Continue from ``state()``; an unusable state (another phase count) starts afresh."""
        arr = np.frombuffer(recent, dtype="<f4")
        if not 0 <= phase < self.phases or arr.size % self.phases:
            phase, arr = 0, arr[:0]
        rows = arr.reshape(-1, self.phases)[-self.memory :]
        self.phase = int(phase)
        self._recent[:] = 0.0
        self._count = len(rows)
        if self._count:
            self._recent[self.memory - self._count :] = rows
