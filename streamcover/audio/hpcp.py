"""HPCP chroma exactly as the shared SHS100K-TEST features were made (/work/shared/data/README.md).

The recipe, vectorised over frames and batches in torch (CPU or CUDA):

1. mono audio at 44,100 Hz; frames of 4,096 samples, hop 1,024, centred on t = k·1,024 for
   every k with k·1,024 ≤ length (half a frame of zeros on either side), the frames
   Essentia's FrameGenerator (startFromZero=False) yields, minus its 1-2 extra zero-padded
   frames past the end;
2. Blackman-Harris 92 dB window (symmetric, denominator N-1) scaled to sum 2; magnitude
   spectrum;
3. spectral peaks between 40 and 5,000 Hz: strict local maxima with magnitude > 1e-5 on
   the scaled-window magnitude, plus the first bin at or above 40 Hz when it is higher than
   its right neighbour (the range-edge peak, not interpolated; flat tops of equal bins, which
   real spectra only show in digital silence below the threshold, are not peaks here);
   parabolic interpolation of
   bin and magnitude on linear magnitude; the 30 largest by magnitude are kept;
4. 12 pitch classes, bin 0 = A with a 440 Hz reference; each peak (f, m) adds
   m² · 0.6^(h-1) · cos²(π d / (4/3)) to every pitch class whose centre lies within
   d ≤ 2/3 semitone of the pitch of f/h, for h = 1..8; each frame is divided by its maximum;
5. non-overlapping sums of 20 frames (leftover frames dropped), each divided by its maximum.

With ``tuning_phases`` = n > 1 (the front end's default is 2), steps 4-5 also run at the
references 440 · 2^(k/(12·n)) Hz, k = 1 … n − 1, on the same peaks: frames then hold n
profiles side by side, phase-major, each normalised on its own, and
``streamcover.audio.tuning.TuningFold`` keeps one per pooled frame. Phase 0 is always the
recipe above, bit for bit.

All-zero frames (digital silence) stay zero. No per-frame Python loops: frames are blocks
of a tensor, peaks are masks and ``topk``, pitch-class accumulation is a ``scatter_add`` per window bin (two).
Essentia is the test-only oracle for this module; nothing here imports or derives from it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

__all__ = [
    "HPCPParams",
    "blackman_harris_92",
    "hpcp_frames",
    "hpcp_frames_many",
    "hpcp_pooled",
    "pool_hpcp",
]


@dataclass(frozen=True)
class HPCPParams:
    """Every constant of the recipe; the defaults are the shared data set's."""

    sample_rate: int = 44_100
    frame_size: int = 4096
    hop_size: int = 1024
    min_freq: float = 40.0
    max_freq: float = 5000.0
    magnitude_threshold: float = 1e-5
    max_peaks: int = 30
    size: int = 12
    reference_freq: float = 440.0
    harmonics: int = 8  # h = 1..8: the fundamental and 7 further harmonics
    harmonic_decay: float = 0.6  # weight 0.6^(h-1)
    window_semitones: float = 4.0 / 3.0  # squared-cosine window, ±2/3 semitone
    pool: int = 20
    tuning_phases: int = 1  # profiles per frame at references shifted by 1/n semitone

    def __post_init__(self) -> None:
        if not 1 <= self.tuning_phases <= 4:
            raise ValueError(f"tuning_phases must be 1..4, got {self.tuning_phases}")

    @property
    def raw_bins(self) -> int:
        """Values per frame before the tuning fold: ``size`` per phase."""
        return self.size * self.tuning_phases

    @property
    def left_context(self) -> int:
        """Samples before a frame's centre (zeros before t = 0 for frame 0)."""
        return self.frame_size // 2

    @property
    def frame_rate(self) -> float:
        """Un-pooled frames per second (43.07 at the defaults)."""
        return self.sample_rate / self.hop_size

    @property
    def pooled_rate(self) -> float:
        """Pooled frames per second (2.1533 at the defaults)."""
        return self.sample_rate / self.hop_size / self.pool

    def n_frames(self, n_samples: int) -> int:
        """Centred frames computed from ``n_samples`` of signal: one per hop, t = 0 included."""
        return 0 if n_samples <= 0 else n_samples // self.hop_size + 1


DEFAULT_PARAMS = HPCPParams()


def blackman_harris_92(size: int) -> np.ndarray:
    """Symmetric 4-term Blackman-Harris (92 dB) window, scaled so its values sum to 2."""
    n = np.arange(size, dtype=np.float64)
    phase = 2.0 * np.pi * n / (size - 1)
    w = (
        0.35875
        - 0.48829 * np.cos(phase)
        + 0.14128 * np.cos(2 * phase)
        - 0.01168 * np.cos(3 * phase)
    )
    return (w * (2.0 / w.sum())).astype(np.float32)


@lru_cache(maxsize=16)
def _window(size: int, device: str) -> torch.Tensor:
    return torch.from_numpy(blackman_harris_92(size)).to(device)


@lru_cache(maxsize=16)
def _peak_range(p: HPCPParams) -> tuple[int, int]:
    """First and last spectrum bins inspected for peaks (4 and 464 at the defaults)."""
    bin_hz = p.sample_rate / p.frame_size
    lo = math.ceil(p.min_freq / bin_hz - 1e-9)
    hi = min(p.frame_size // 2, math.floor(p.max_freq / bin_hz + 1e-9))
    if hi - lo < 2:
        raise ValueError(f"peak range {p.min_freq}-{p.max_freq} Hz is narrower than 3 bins")
    return lo, hi


def _interpolate(
    left: torch.Tensor, mid: torch.Tensor, right: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Parabolic interpolation at a strict local maximum: (bin offset, magnitude)."""
    diff = left - right
    delta = 0.5 * diff / (left - 2.0 * mid + right)
    return delta, mid - 0.25 * diff * delta


def _spectral_peaks(
    mag: torch.Tensor, p: HPCPParams, *, candidates: int = 48
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``max_peaks`` peaks per frame: (frequency Hz, magnitude), magnitude 0 where absent.

    ``mag`` is [..., bins]; returns tensors [..., max_peaks]. Interpolating every bin is the
    costly part, so only the ``candidates`` largest raw local maxima are interpolated. This
    is exact: interpolation raises a strict maximum m by (a−b)²/(8(a+b)) ≤ m/4 (a, b the
    drops to the neighbours, both ≤ m), so a maximum outside the candidates can end above
    the 30th kept peak only if 1.25 × (smallest candidate) exceeds it; the few frames where
    that bound does not rule it out are recomputed with all maxima.
    """
    lo, hi = _peak_range(p)
    bin_hz = p.sample_rate / p.frame_size
    thr = p.magnitude_threshold
    shape = mag.shape[:-1]
    region = mag[..., lo : hi + 1].reshape(-1, hi - lo + 1)  # [N, bins lo..hi]
    left, mid, right = region[:, :-2], region[:, 1:-1], region[:, 2:]
    interior = (mid > left) & (mid > right) & (mid > thr)
    raw = mid * interior
    # Range-edge peak at bin lo: higher than its right neighbour, not interpolated.
    edge_val = region[:, 0] * ((region[:, 0] > region[:, 1]) & (region[:, 0] > thr))
    n_cols = raw.shape[-1]
    k_cand = min(candidates, n_cols)
    cand_val, cand_idx = torch.topk(raw, k_cand, dim=-1, sorted=True)
    freqs, values = _interpolate_selected(region, cand_idx, cand_val, edge_val, lo, bin_hz, p)
    if k_cand < n_cols and values.shape[-1] == p.max_peaks:
        # Frames whose weakest kept peak could be beaten by a non-candidate maximum.
        doubt = (1.25 * cand_val[:, -1] > values.amin(dim=-1)) & (cand_val[:, -1] > 0)
        if bool(doubt.any()):
            rows = doubt.nonzero().squeeze(-1)
            all_val, all_idx = torch.sort(raw[rows], dim=-1, descending=True)
            f2, v2 = _interpolate_selected(
                region[rows], all_idx, all_val, edge_val[rows], lo, bin_hz, p
            )
            freqs[rows] = f2
            values[rows] = v2
    return freqs.reshape(*shape, -1), values.reshape(*shape, -1)


def _interpolate_selected(
    region: torch.Tensor,
    idx: torch.Tensor,
    raw_val: torch.Tensor,
    edge_val: torch.Tensor,
    lo: int,
    bin_hz: float,
    p: HPCPParams,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolate the selected maxima (column ``idx`` of the interior), add the edge peak,
    keep the ``max_peaks`` largest. Interior positions stay inside (lo + 0.5, hi − 0.5) bins,
    so no interpolated peak leaves the 40-5,000 Hz range."""
    present = raw_val > 0
    left = torch.gather(region, 1, idx)
    mid = torch.gather(region, 1, idx + 1)
    right = torch.gather(region, 1, idx + 2)
    safe_right = torch.where(present, right, mid - 1.0)  # keeps the denominator non-zero
    delta, value = _interpolate(torch.where(present, left, mid - 1.0), mid, safe_right)
    value = torch.where(present, value, 0.0)
    pos = (idx + (lo + 1)).to(region.dtype) + torch.where(present, delta, 0.0)
    values = torch.cat([edge_val.unsqueeze(-1), value], dim=-1)
    positions = torch.cat([torch.full_like(edge_val, float(lo)).unsqueeze(-1), pos], dim=-1)
    k = min(p.max_peaks, values.shape[-1])
    top_val, top_idx = torch.topk(values, k, dim=-1, sorted=False)
    return torch.gather(positions, -1, top_idx) * bin_hz, top_val


@lru_cache(maxsize=16)
def _harmonic_tables(p: HPCPParams, device: str, phase: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per harmonic h: bin offset size·log2(h·ref) and weight decay^(h-1), for the reference
    of tuning phase ``phase`` (``phase / tuning_phases`` semitone above ``reference_freq``)."""
    h = np.arange(1, p.harmonics + 1, dtype=np.float64)
    ref = p.reference_freq * 2.0 ** (phase / (12.0 * p.tuning_phases))
    offset = p.size * np.log2(h * ref)
    weight = p.harmonic_decay ** (h - 1.0)
    return (
        torch.from_numpy(offset.astype(np.float32)).to(device),
        torch.from_numpy(weight.astype(np.float32)).to(device),
    )


def _accumulate(freq: torch.Tensor, mag: torch.Tensor, p: HPCPParams, phase: int = 0) -> torch.Tensor:
    """Pitch-class profile [..., size] from peaks [..., P] (not yet normalised)."""
    size = p.size
    resolution = size / 12.0  # bins per semitone
    half = p.window_semitones * resolution / 2.0  # window half-width in bins
    offset, hweight = _harmonic_tables(p, str(freq.device), phase)
    safe_f = torch.where(mag > 0, freq, p.reference_freq)
    # Position of f/h on the pitch-class axis, in bins, relative to the reference.
    pos = (torch.log2(safe_f) * size).unsqueeze(-1) - offset  # [..., P, H]
    first = torch.ceil(pos - half)
    energy = (mag * mag).unsqueeze(-1) * hweight  # [..., P, H]
    profile = torch.zeros(*freq.shape[:-1], size, device=freq.device, dtype=freq.dtype)
    # The window spans 2*half bins, so at most floor(2*half)+1 bins receive weight.
    scale = math.pi / (2.0 * half)
    for j in range(math.floor(2 * half) + 1):
        b = first + j
        dist = (pos - b).abs_()  # bins
        w = torch.cos(dist * scale).square_().mul_(dist <= half).mul_(energy)
        idx = torch.remainder(b, size).to(torch.int64)
        profile.scatter_add_(-1, idx.flatten(-2), w.flatten(-2))
    return profile


def _unit_max(x: torch.Tensor) -> torch.Tensor:
    """Divide rows by their maximum; all-zero rows stay zero."""
    peak = x.amax(dim=-1, keepdim=True)
    return x / torch.where(peak > 0, peak, 1.0)  # x is 0 wherever its row maximum is 0


def hpcp_from_frames(frames: torch.Tensor, p: HPCPParams = DEFAULT_PARAMS) -> torch.Tensor:
    """Per-frame unit-max HPCP [..., raw_bins] of already cut frames [..., frame_size]."""
    win = _window(p.frame_size, str(frames.device))
    return _hpcp_from_windowed(frames * win, p)


def _hpcp_from_windowed(windowed: torch.Tensor, p: HPCPParams) -> torch.Tensor:
    """``hpcp_from_frames`` of frames already multiplied by the window (rows are independent)."""
    spec = torch.fft.rfft(windowed, dim=-1)
    _, hi = _peak_range(p)
    # Peaks only need bins up to hi+1: take the magnitude of those alone.
    mag = spec[..., : hi + 2].abs()
    freq, val = _spectral_peaks(mag, p)
    if p.tuning_phases == 1:
        return _unit_max(_accumulate(freq, val, p))
    return torch.cat([_unit_max(_accumulate(freq, val, p, k)) for k in range(p.tuning_phases)], dim=-1)


def hpcp_frames(
    wave: torch.Tensor | np.ndarray,
    p: HPCPParams = DEFAULT_PARAMS,
    *,
    block_frames: int = 2048,
    center: bool = True,
) -> torch.Tensor:
    """Frame-level HPCP of waveforms [S] or [B, S] at ``p.sample_rate`` -> [(B,) F, raw_bins].

    ``center`` pads half a frame of zeros on both sides, so frames are centred on
    t = k·hop for k = 0..S // hop (offline use); with ``center=False`` the input is taken
    as already framed context (streams) and only frames wholly inside it are computed.
    About ``block_frames`` frames (over the whole batch) are processed at a time, which
    bounds the working memory to ~70 MB whatever the batch size and duration.
    """
    x = torch.as_tensor(wave)
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    squeeze = x.ndim == 1
    if squeeze:
        x = x.unsqueeze(0)
    if x.ndim != 2:
        raise ValueError(f"expected a waveform [S] or [B, S], got shape {tuple(x.shape)}")
    if center and x.shape[-1] > 0:
        x = torch.nn.functional.pad(x, (p.left_context, p.frame_size - p.left_context))
    n = x.shape[-1]
    n_frames = 0 if n < p.frame_size else (n - p.frame_size) // p.hop_size + 1
    out = torch.zeros(x.shape[0], n_frames, p.raw_bins, dtype=torch.float32, device=x.device)
    step = max(1, block_frames // x.shape[0])
    for start in range(0, n_frames, step):
        stop = min(n_frames, start + step)
        seg = x[:, start * p.hop_size : (stop - 1) * p.hop_size + p.frame_size]
        frames = seg.unfold(-1, p.frame_size, p.hop_size)  # [B, f, frame_size], a view
        out[:, start:stop] = hpcp_from_frames(frames, p)
    return out[0] if squeeze else out


def hpcp_frames_many(
    segments: Sequence[np.ndarray], p: HPCPParams = DEFAULT_PARAMS, *, block_frames: int = 512
) -> list[np.ndarray]:
    """Frame-level HPCP of many uncentred signals at once -> one [F_i, raw_bins] array per signal.

    The streaming monitor's path: every stream with new audio contributes a segment (frame
    context, as ``hpcp_frames(..., center=False)`` takes it), and the frames of all of them
    go through one transform, so the per-call cost of the small tensor ops is paid once
    per ``block_frames`` frames instead of once per stream. Each segment's frames are cut
    and windowed straight into a shared block buffer (one copy). Blocks of ~512 frames
    (8 MB) measured fastest: 2,048-frame blocks allocate 32 MB spectra per call and run
    the FFT at half the speed (page faults), 64-frame blocks pay the op overhead again.
    Frames are independent rows, so the result equals ``hpcp_frames`` of each segment on
    its own (up to float32 round-off of the batched FFT).
    """
    win = _window(p.frame_size, "cpu").numpy()
    counts = [0 if len(s) < p.frame_size else (len(s) - p.frame_size) // p.hop_size + 1 for s in segments]
    total = sum(counts)
    out = np.empty((total, p.raw_bins), dtype=np.float32)
    if total:
        buf = np.empty((min(total, max(1, block_frames)), p.frame_size), dtype=np.float32)
        done = fill = 0
        for seg, n in zip(segments, counts, strict=True):
            if not n:
                continue
            x = np.asarray(seg, dtype=np.float32)
            if x.ndim != 1:
                raise ValueError(f"expected 1-D segments, got shape {x.shape}")
            frames = np.lib.stride_tricks.sliding_window_view(x, p.frame_size)[:: p.hop_size]
            i = 0
            while i < n:
                take = min(n - i, len(buf) - fill)
                np.multiply(frames[i : i + take], win, out=buf[fill : fill + take])
                fill += take
                i += take
                if fill == len(buf):
                    with torch.inference_mode():
                        out[done : done + fill] = _hpcp_from_windowed(torch.from_numpy(buf), p).numpy()
                    done += fill
                    fill = 0
        if fill:
            with torch.inference_mode():
                out[done : done + fill] = _hpcp_from_windowed(torch.from_numpy(buf[:fill]), p).numpy()
    bounds = np.cumsum([0, *counts])
    return [out[a:b] for a, b in itertools.pairwise(bounds)]


def pool_hpcp(frames: torch.Tensor, pool: int = DEFAULT_PARAMS.pool, phases: int = 1) -> torch.Tensor:
    """Sum non-overlapping groups of ``pool`` frames [..., F, bins] (leftover dropped), unit-max
    (each of ``phases`` equal blocks of bins on its own)."""
    n = frames.shape[-2] // pool
    grouped = frames[..., : n * pool, :].reshape(*frames.shape[:-2], n, pool, frames.shape[-1])
    summed = grouped.sum(dim=-2)
    if phases == 1:
        return _unit_max(summed)
    split = summed.reshape(*summed.shape[:-1], phases, summed.shape[-1] // phases)
    return _unit_max(split).reshape(summed.shape)


def hpcp_pooled(wave: torch.Tensor | np.ndarray, p: HPCPParams = DEFAULT_PARAMS) -> torch.Tensor:
    """The shared data set's feature: pooled HPCP [(B,) T, raw_bins] at ``p.pooled_rate``
    frames/s (every tuning phase, unfolded)."""
    return pool_hpcp(hpcp_frames(wave, p), p.pool, p.tuning_phases)
