"""A streaming polyphase resampler: frames in, samples out, no clicks at frame edges.

Producers may send any rate; the front end wants its own (44.1 kHz for HPCP). Resampling
each 0.5 s frame on its own would put a filter transient at every frame boundary, so this
keeps the last few input samples as history and computes every output sample from the
whole stream, exactly as an offline resampler would (up to float rounding).
"""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import firwin, upfirdn


class StreamResampler:
    """Rational-rate resampler with state; ``push`` may be called with any block sizes.

    Output sample m is the polyphase FIR response at input time m·down/up (zero phase), over
    the whole stream. Each push runs scipy's C ``upfirdn`` (only the kept outputs are
    computed) on the new samples plus a short history, started at an input index chosen so
    that its output grid coincides with the stream's.
    """

    def __init__(self, in_rate: int, out_rate: int, half_taps: int = 16) -> None:
        g = gcd(in_rate, out_rate)
        self.up = out_rate // g
        self.down = in_rate // g
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.identity = self.up == self.down
        if self.identity:
            return
        factor = max(self.up, self.down)
        n = 2 * half_taps * factor + 1
        self.h = (firwin(n, 0.95 / factor, window=("kaiser", 8.0)) * self.up).astype(np.float64)
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
