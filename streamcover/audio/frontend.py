"""Front-ends: waveform -> feature matrix [bins, T] for the encoder, offline, batched or streamed.

Both front-ends share one framing model, which is what makes streaming exact:

* raw frame k is centred on sample k·hop of the signal and depends only on samples
  [k·hop − context_left, k·hop + context_right);
* offline, the signal gets ``context_left`` zeros before and ``context_right`` zeros after
  it, and there is one raw frame per hop with its centre inside the signal, k = 0..S // hop
  (so 20 s gives 862 raw frames and 43 pooled frames for both front-ends);
* raw frames are pooled in non-overlapping groups of ``pool`` (HPCP: sum then unit-max;
  CQT: mean), dropping an incomplete last group;
* HPCP frames hold one profile per tuning phase (``raw_bins`` values), and a causal
  ``TuningFold`` keeps one phase per pooled frame (``n_bins`` values): offline it runs over
  the whole signal from its start, in a stream over the frames as they come, to the same
  result.

``FeatureStream`` produces exactly the offline frames: ``push`` computes each raw frame as
soon as its whole support has arrived, keeps only the samples later frames still need (so
each new sample is transformed once, plus the frame overlap every framed transform has) and
emits pooled frames when their group is complete; ``flush`` at the end of a finite stream
adds the right-hand zeros and emits the last frames, as offline does. Raw frames are computed
only when a pooled group can complete, so the per-call context (CQT: 2 × 6,656 samples of
decimation-filter and kernel support; HPCP: one 4,096-sample frame) is re-read at most once
per output frame, however small the pushes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from streamcover.audio.cqt import CQTParams, CQTTransform
from streamcover.audio.hpcp import HPCPParams, hpcp_frames, hpcp_frames_many, pool_hpcp
from streamcover.audio.tuning import TuningFold

if TYPE_CHECKING:
    from streamcover.config import FrontEndSettings

__all__ = ["CQTFrontEnd", "FeatureStream", "FrontEnd", "HPCPFrontEnd", "make_frontend", "push_many"]


class FrontEnd(ABC):
    """A feature extractor with a fixed sample rate, bin count and frame rate."""

    name: str
    sample_rate: int
    n_bins: int  # bins of the output features
    raw_bins: int  # bins of raw and pooled frames before the tuning fold (= n_bins without one)
    hop: int  # samples per raw frame
    pool: int  # raw frames per output frame
    context_left: int
    context_right: int

    @property
    def frames_per_second(self) -> float:
        """Output (pooled) frames per second."""
        return self.sample_rate / self.hop / self.pool

    def n_frames(self, n_samples: int) -> int:
        """Output frames for a waveform of ``n_samples`` samples."""
        return self.n_raw_frames(n_samples) // self.pool

    def n_raw_frames(self, n_samples: int) -> int:
        """Raw frames of an offline signal: one per hop with its centre inside the signal."""
        return 0 if n_samples <= 0 else n_samples // self.hop + 1

    @abstractmethod
    def raw_frames(self, segment: torch.Tensor) -> torch.Tensor:
        """Raw frames [B, F, bins] of a segment [B, n] whose first sample is a frame's left edge.

        Frame j is centred on ``context_left + j·hop``; F = (n − context_left −
        context_right) // hop + 1 (the frames with complete support).
        """

    @abstractmethod
    def pool_frames(self, raw: torch.Tensor) -> torch.Tensor:
        """Pool complete groups of ``pool`` raw frames [B, F, raw_bins] -> [B, F // pool, raw_bins]."""

    def new_fold(self) -> TuningFold | None:
        """A fresh fold from pooled ``raw_bins`` to ``n_bins`` per stream (None: no fold)."""
        return None

    def raw_frames_many(self, segments: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Raw frames [F_i, bins] of several 1-D segments (each as in ``raw_frames``).

        This default transforms them one by one; front-ends whose frames are independent
        (HPCP) override it with one transform over all frames.
        """
        out = []
        with torch.inference_mode():
            for seg in segments:
                x = torch.from_numpy(np.ascontiguousarray(seg, dtype=np.float32)).unsqueeze(0)
                out.append(self.raw_frames(x)[0].numpy())
        return out

    def features_batch(self, waves: torch.Tensor) -> torch.Tensor:
        """Features [B, bins, T] of equal-length waveforms [B, S] at ``sample_rate``, on their device."""
        if waves.ndim != 2:
            raise ValueError(f"expected waveforms [B, S], got shape {tuple(waves.shape)}")
        x = waves if waves.dtype == torch.float32 else waves.float()
        if x.shape[-1] == 0:
            return torch.zeros(x.shape[0], self.n_bins, 0, dtype=x.dtype, device=x.device)
        x = torch.nn.functional.pad(x, (self.context_left, self.context_right))
        with torch.inference_mode():
            pooled = self.pool_frames(self.raw_frames(x))
            if self.raw_bins != self.n_bins:
                folded = []
                for row in pooled.cpu().numpy():
                    fold = self.new_fold()
                    assert fold is not None
                    folded.append(fold(row))
                pooled = torch.from_numpy(np.stack(folded)).to(pooled.device)
            return pooled.transpose(1, 2).contiguous()

    def features(self, wave: np.ndarray) -> np.ndarray:
        """Features [bins, T] (float32) of a mono waveform [S] at ``sample_rate``."""
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        if x.ndim != 1:
            raise ValueError(f"expected a mono waveform [S], got shape {tuple(x.shape)}")
        return self.features_batch(x.unsqueeze(0))[0].cpu().numpy()

    def stream(self) -> FeatureStream:
        """A new incremental extractor for one stream."""
        return FeatureStream(self)


class FeatureStream:
    """Incremental features for one stream: push samples, get only the new feature frames.

    Holds the samples later frames still need (< one frame support) and the raw frames of
    the pooling group in progress. ``frames_emitted`` counts output frames so far; the
    output frame i starts at ``i / frames_per_second`` seconds into the stream.
    """

    def __init__(self, frontend: FrontEnd) -> None:
        self.frontend = frontend
        self._buf = np.zeros(frontend.context_left, dtype=np.float32)
        self._raw: list[np.ndarray] = []
        self._n_raw = 0
        self._raw_done = 0
        self._flushed = False
        self.fold = frontend.new_fold()
        self.frames_emitted = 0
        self.samples_seen = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add mono samples at the front-end's rate; return new feature frames [bins, new]."""
        return self._advance(self._accept(samples))

    def frames_after(self, more_samples: int) -> int:
        """``frames_emitted`` once ``more_samples`` further samples have been pushed (no flush).

        Pure arithmetic on sample counts: a pooled frame is out as soon as the support of
        the last raw frame of its group has arrived, however the samples were split into
        pushes. Lets a caller that pushes several blocks at once tell which block completed
        which frame.
        """
        fe = self.frontend
        n = fe.context_left + self.samples_seen + max(0, more_samples)
        span = fe.context_left + fe.context_right
        raw = 0 if n < span else (n - span) // fe.hop + 1
        return raw // fe.pool

    def flush(self) -> np.ndarray:
        """End of a finite stream: the last frames, computed over trailing zeros as offline."""
        if self._flushed:
            return np.zeros((self.frontend.n_bins, 0), dtype=np.float32)
        self._flushed = True
        if self.samples_seen == 0:
            return np.zeros((self.frontend.n_bins, 0), dtype=np.float32)
        # Frames still owed are those centred in the signal; the zeros complete their support.
        owed = self.frontend.n_raw_frames(self.samples_seen) - self._raw_done
        out = self._advance(np.zeros(self.frontend.context_right, dtype=np.float32), limit=owed)
        self._buf = self._buf[:0]
        return out

    # The steps of a push, split so that ``push_many`` can compute the raw frames of many
    # streams in one call: accept → plan (segment to transform) → take (raw frames in,
    # complete pooling groups out) → emit (pooled frames out).

    def _check(self, samples: np.ndarray) -> np.ndarray:
        if self._flushed:
            raise RuntimeError("FeatureStream.push after flush")
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono samples [n], got shape {x.shape}")
        return x

    def _accept(self, samples: np.ndarray) -> np.ndarray:
        x = self._check(samples)
        self.samples_seen += len(x)
        return x

    def _advance(self, x: np.ndarray, limit: int | None = None) -> np.ndarray:
        fe = self.frontend
        seg = self._plan(x, limit)
        raw = None
        if seg is not None:
            with torch.inference_mode():
                raw = fe.raw_frames(torch.from_numpy(seg).unsqueeze(0))[0].numpy()
        groups = self._take(raw)
        if not len(groups):
            return self._emit(np.zeros((0, fe.raw_bins), dtype=np.float32))
        with torch.inference_mode():
            pooled = fe.pool_frames(torch.from_numpy(groups).unsqueeze(0))[0].numpy()
        return self._emit(pooled)

    def _plan(self, x: np.ndarray, limit: int | None = None) -> np.ndarray | None:
        """Append ``x``; the segment whose raw frames are due now (None: none are)."""
        fe = self.frontend
        self._buf = np.concatenate([self._buf, x]) if len(x) else self._buf
        span = fe.context_left + fe.context_right
        n = len(self._buf)
        n_new = 0 if n < span else (n - span) // fe.hop + 1
        if limit is not None:
            n_new = max(0, min(n_new, limit))
        elif (self._n_raw + n_new) // fe.pool == self._n_raw // fe.pool:
            # No pooled frame would complete: wait, so that each call computes at least a
            # pooled frame's worth of raw frames and the context is re-read once per group
            # at most, however small the pushes (the output latency is unchanged).
            n_new = 0
        if not n_new:
            return None
        return self._buf[: (n_new - 1) * fe.hop + span]

    def _take(self, raw: np.ndarray | None) -> np.ndarray:
        """Add the planned segment's raw frames [n_new, bins]; return the complete pooling
        groups [groups·pool, bins] and keep the rest."""
        fe = self.frontend
        if raw is not None and len(raw):
            n_new = len(raw)
            self._raw.append(raw)
            self._n_raw += n_new
            self._raw_done += n_new
            self._buf = self._buf[n_new * fe.hop :].copy()
        used = (self._n_raw // fe.pool) * fe.pool
        if used == 0:
            return np.zeros((0, fe.raw_bins), dtype=np.float32)
        raw_all = np.concatenate(self._raw) if len(self._raw) > 1 else self._raw[0]
        rest = raw_all[used:]
        self._raw = [rest] if len(rest) else []
        self._n_raw = len(rest)
        return raw_all[:used]

    def _emit(self, pooled: np.ndarray) -> np.ndarray:
        """Pooled frames [groups, raw_bins] -> the push's output [n_bins, groups] (folded)."""
        self.frames_emitted += len(pooled)
        if self.fold is not None:
            pooled = self.fold(pooled)
        return np.ascontiguousarray(pooled.T)

    # ---- tuning-fold checkpoint (streamcover.monitor.stream) -------------------------
    def tuning_state(self) -> tuple[int, bytes]:
        """The fold's (phase, recent spreads); (0, b"") without a fold."""
        return (0, b"") if self.fold is None else self.fold.state()

    def restore_tuning(self, phase: int, recent: bytes, hold: int = 0) -> None:
        """Continue a checkpointed fold; the next ``hold`` frames leave its state alone."""
        if self.fold is not None:
            self.fold.restore(phase, recent)
            self.fold.hold(hold)


def push_many(streams: Sequence[FeatureStream], blocks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``[s.push(b) for s, b in zip(streams, blocks)]`` with one transform for all streams.

    The streams must be distinct and share one front end. Their due raw frames go through
    ``FrontEnd.raw_frames_many`` together and their complete groups through one pooling
    call, which is what lets the monitor serve hundreds of streams: the per-stream path
    pays the fixed cost of a few dozen small tensor ops for every 0.5 s of every stream.
    Results equal the per-stream pushes (up to float32 round-off of the batched FFT).
    """
    if len(streams) != len(blocks):
        raise ValueError(f"push_many: {len(streams)} streams but {len(blocks)} blocks")
    if not streams:
        return []
    fe = streams[0].frontend
    if any(s.frontend is not fe for s in streams):
        raise ValueError("push_many: all streams must share one front end")
    if len({id(s) for s in streams}) != len(streams):
        raise ValueError("push_many: a stream appears twice (concatenate its blocks instead)")
    xs = [s._check(b) for s, b in zip(streams, blocks, strict=True)]  # all valid before any change
    segs = [s._plan(s._accept(x)) for s, x in zip(streams, xs, strict=True)]
    due = [i for i, seg in enumerate(segs) if seg is not None]
    raw_by: dict[int, np.ndarray] = {}
    if due:
        raws = fe.raw_frames_many([segs[i] for i in due])  # type: ignore[misc]
        raw_by = dict(zip(due, raws, strict=True))
    groups = [s._take(raw_by.get(i)) for i, s in enumerate(streams)]
    sizes = [len(g) // fe.pool for g in groups]
    pooled = np.zeros((0, fe.raw_bins), dtype=np.float32)
    if sum(sizes):
        with torch.inference_mode():
            stacked = torch.from_numpy(np.concatenate([g for g in groups if len(g)]))
            pooled = fe.pool_frames(stacked.unsqueeze(0))[0].numpy()
    bounds = np.cumsum([0, *sizes])
    return [s._emit(pooled[a:b]) for s, a, b in zip(streams, bounds[:-1], bounds[1:], strict=True)]


class HPCPFrontEnd(FrontEnd):
    """HPCP chroma of the shared SHS100K-TEST features (see ``hpcp.py``): 12 bins, 2.1533 fps,
    folded over ``params.tuning_phases`` tuning phases (``streamcover.audio.tuning``)."""

    def __init__(self, params: HPCPParams | None = None) -> None:
        self.params = params or HPCPParams()
        p = self.params
        self.name = "hpcp"
        self.sample_rate = p.sample_rate
        self.n_bins = p.size
        self.raw_bins = p.raw_bins
        self.hop = p.hop_size
        self.pool = p.pool
        self.context_left = p.frame_size // 2
        self.context_right = p.frame_size - p.frame_size // 2

    def raw_frames(self, segment: torch.Tensor) -> torch.Tensor:
        return hpcp_frames(segment, self.params, center=False)

    def raw_frames_many(self, segments: Sequence[np.ndarray]) -> list[np.ndarray]:
        return hpcp_frames_many(segments, self.params)

    def pool_frames(self, raw: torch.Tensor) -> torch.Tensor:
        return pool_hpcp(raw, self.pool, self.params.tuning_phases)

    def new_fold(self) -> TuningFold | None:
        phases = self.params.tuning_phases
        return None if phases == 1 else TuningFold(phases, self.params.size)


class CQTFrontEnd(FrontEnd):
    """Magnitude CQT (see ``cqt.py``): 84 bins from C1, hop 512 at 22,050 Hz, mean-pooled."""

    def __init__(self, pool: int = 20, params: CQTParams | None = None) -> None:
        if pool < 1:
            raise ValueError(f"cqt pool must be >= 1, got {pool}")
        self.params = params or CQTParams()
        self.transform = CQTTransform(self.params)
        self.name = "cqt"
        self.sample_rate = self.params.sample_rate
        self.n_bins = self.params.n_bins
        self.raw_bins = self.n_bins
        self.hop = self.params.hop_length
        self.pool = pool
        self.context_left = self.transform.context
        self.context_right = self.transform.context

    def raw_frames(self, segment: torch.Tensor) -> torch.Tensor:
        return self.transform.frames(segment)

    def pool_frames(self, raw: torch.Tensor) -> torch.Tensor:
        n = raw.shape[-2] // self.pool
        grouped = raw[..., : n * self.pool, :].reshape(*raw.shape[:-2], n, self.pool, raw.shape[-1])
        return grouped.mean(dim=-2)


def hpcp_params_for_rate(sample_rate: int, tuning_phases: int = 1) -> HPCPParams:
    """The recipe at 44.1 kHz, or its half-rate twin: frames of the same duration (92.9 ms),
    hop (23.2 ms) and bin spacing (10.77 Hz); the 40-5,000 Hz peaks fit under either Nyquist."""
    if sample_rate == 44_100:
        return HPCPParams(tuning_phases=tuning_phases)
    if sample_rate == 22_050:
        return HPCPParams(sample_rate=22_050, frame_size=2048, hop_size=512, tuning_phases=tuning_phases)
    raise ValueError(f"HPCP runs at 44100 or 22050 Hz, not {sample_rate}")


def make_frontend(settings: FrontEndSettings | None = None) -> FrontEnd:
    """The front-end named by ``settings.frontend`` (default: the global settings)."""
    if settings is None:
        from streamcover.config import get_settings

        settings = get_settings().frontend
    if settings.name == "hpcp":
        return HPCPFrontEnd(hpcp_params_for_rate(settings.hpcp_sample_rate, settings.hpcp_tuning_phases))
    if settings.name == "cqt":
        return CQTFrontEnd(pool=settings.cqt_pool)
    raise ValueError(f"unknown front-end {settings.name!r}; expected 'cqt' or 'hpcp'")
