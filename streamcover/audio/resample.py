"""A streaming polyphase resampler: frames in, samples out, no clicks at frame edges.

Producers may send any rate; the front end wants its own (44.1 kHz for HPCP). Resampling
each 0.5 s frame on its own would put a filter transient at every frame boundary, so this
keeps the last few input samples as history and computes every output sample from the
whole stream, exactly as an offline resampler would (up to float rounding).

The filter length grows with the rate ratio's terms (an odd rate such as 191,999 Hz against
44.1 kHz would need tens of millions of taps), and rates come from producers: a ratio whose
filter exceeds ``MAX_TAPS`` is refused with :class:`UnsupportedRate`, and filters are
designed once per ratio (``_design``'s cache), not per stream or per frame.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np
from scipy.signal import firwin, upfirdn

# Longest polyphase filter built (taps): a ratio whose larger term is at most 1024, at 16 half
# taps per phase. 8 kHz -> 44.1 kHz (441/80) needs 14,113; every rate in
# audio.supported_sample_rates fits (config.AudioSettings checks the same bound).
MAX_TAPS = 2 * 16 * 1024 + 1


class UnsupportedRate(ValueError):
    """A rate pair whose resampling filter would be longer than ``MAX_TAPS``."""


def filter_taps(in_rate: int, out_rate: int, half_taps: int = 16) -> int:
    """Length of the filter converting ``in_rate`` to ``out_rate`` (1: no filter needed)."""
    if in_rate <= 0 or out_rate <= 0:
        raise UnsupportedRate(f"sample rates must be positive, got {in_rate} -> {out_rate}")
    g = gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    return 1 if up == down else 2 * half_taps * max(up, down) + 1


@lru_cache(maxsize=64)
def _design(up: int, down: int, half_taps: int) -> np.ndarray:
    """The (read-only, shared) anti-aliasing filter of one ratio."""
    factor = max(up, down)
    n = 2 * half_taps * factor + 1
    h = (firwin(n, 0.95 / factor, window=("kaiser", 8.0)) * up).astype(np.float64)
    h.flags.writeable = False
    return h


class StreamResampler:
    """Rational-rate resampler with state; ``push`` may be called with any block sizes.

    Output sample m is the polyphase FIR response at input time m·down/up (zero phase), over
    the whole stream. Each push runs scipy's C ``upfirdn`` (only the kept outputs are
    computed) on the new samples plus a short history, started at an input index chosen so
    that its output grid coincides with the stream's.
    """

    def __init__(self, in_rate: int, out_rate: int, half_taps: int = 16) -> None:
        taps = filter_taps(in_rate, out_rate, half_taps)
        if taps > MAX_TAPS:
            raise UnsupportedRate(f"resampling {in_rate} Hz to {out_rate} Hz needs a filter of "
                                  f"{taps} taps (the limit is {MAX_TAPS})")
        g = gcd(in_rate, out_rate)
        self.up = out_rate // g
        self.down = in_rate // g
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.identity = self.up == self.down
        if self.identity:
            return
        n = taps
        self.h = _design(self.up, self.down, half_taps)
        self.delay = (n - 1) // 2
        taps_in = -(-n // self.up) + 1
        self.keep = taps_in + self.down + 2
        # Inputs before the stream are silence: history starts as zeros at negative indices.
        self.hist = np.zeros(self.keep, dtype=np.float64)
        self.hist_base = -self.keep
        self.consumed = 0
        self.produced = 0
        self.inv_up = pow(self.up, -1, self.down) if self.down > 1 else 0

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed input samples; returns every output sample that is now fully determined."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if self.identity:
            return x.copy()
        buf = np.concatenate([self.hist, x.astype(np.float64)])
        buf_base = self.hist_base
        self.consumed += len(x)
        last = (self.consumed * self.up - self.delay - 1) // self.down  # newest complete output
        out = np.zeros(0, dtype=np.float32)
        if last >= self.produced:
            # smallest o >= 0 with (buf_base + o)·up ≡ delay (mod down)
            o = (self.delay * self.inv_up - buf_base) % self.down if self.down > 1 else 0
            base = buf_base + o
            z = upfirdn(self.h, buf[o:], self.up, self.down)
            shift = (base * self.up - self.delay) // self.down  # z[k] is output m = k + shift
            k0, k1 = self.produced - shift, last + 1 - shift
            out = z[k0:k1].astype(np.float32)
            self.produced = last + 1
        self.hist = buf[-self.keep :]
        self.hist_base = buf_base + len(buf) - self.keep
        return out

    def expected_output(self, n_in: int) -> int:
        """Output samples that ``n_in`` inputs correspond to."""
        return n_in * self.up // self.down
