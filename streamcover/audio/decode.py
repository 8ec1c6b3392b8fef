"""Decode any audio or short-video file to mono float32 at a chosen rate, with PyAV.

PyAV ships its own FFmpeg, so every container FFmpeg reads works without system
packages: wav, flac, mp3, ogg/opus, m4a/aac, and the audio track of mp4/webm/mov.

Resampling and channel handling happen in FFmpeg's swresample (``av.AudioResampler``),
which streams naturally (``iter_audio``) and measured faster than decoding at the
native rate and resampling in torchaudio (see docs/frontends.md). The mixdown to
mono is done here, as the plain channel mean ((L+R)/2), the convention of Essentia's
MonoLoader that produced the shared HPCP features, instead of FFmpeg's
centre-weighted downmix matrix.

Anything that cannot yield audio (missing file, damaged or unsupported container,
no audio track, no decodable samples) raises ``AudioDecodeError`` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from av.container import InputContainer

__all__ = ["AudioDecodeError", "iter_audio", "load_audio", "probe_duration"]


class AudioDecodeError(RuntimeError):
    """A file could not be decoded to audio; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode audio from {self.path!s}: {reason}")


def _open(path: str | Path) -> InputContainer:
    import av

    p = Path(path)
    if not p.exists():
        raise AudioDecodeError(p, "no such file")
    if p.is_dir():
        raise AudioDecodeError(p, "is a directory")
    if p.stat().st_size == 0:
        raise AudioDecodeError(p, "empty file")
    try:
        container = av.open(str(p), mode="r")
    except av.FFmpegError as exc:
        raise AudioDecodeError(p, f"unreadable or unsupported container ({exc})") from exc
    except (UnicodeDecodeError, ValueError, OSError) as exc:
        raise AudioDecodeError(p, f"unreadable or unsupported container ({exc})") from exc
    if not container.streams.audio:
        kinds: list[str] = sorted({str(s.type) for s in container.streams}) or ["no streams"]
        container.close()
        raise AudioDecodeError(p, f"no audio track (streams: {', '.join(kinds)})")
    return container


def _to_mono(planar: np.ndarray) -> np.ndarray:
    """Planar float array [channels, n] -> mono float32 via the channel mean."""
    if planar.shape[0] == 1:
        return np.ascontiguousarray(planar[0], dtype=np.float32)
    return planar.mean(axis=0, dtype=np.float32)


def iter_audio(
    path: str | Path,
    sample_rate: int,
    block_seconds: float = 10.0,
    *,
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """Stream a file as mono float32 blocks of ``block_seconds`` at ``sample_rate``.

    Every block but the last has exactly ``round(block_seconds * sample_rate)`` samples,
    so producers can cut fixed-size frames without re-buffering. ``max_seconds`` stops
    early (tests and previews use short excerpts of long tracks).
    """
    import av

    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    block = max(1, round(block_seconds * sample_rate))
    limit = None if max_seconds is None else max(0, round(max_seconds * sample_rate))
    p = Path(path)
    container = _open(p)
    emitted = 0
    try:
        stream = container.streams.audio[0]
        stream.codec_context.thread_type = "AUTO"
        resampler: av.AudioResampler | None = None
        pending: list[np.ndarray] = []
        n_pending = 0
        layout_name: str | None = None

        def flush(final: bool) -> Iterator[np.ndarray]:
            nonlocal pending, n_pending, emitted
            if not pending:
                return
            mono = pending[0] if len(pending) == 1 else np.concatenate(pending)
            pending, n_pending = [], 0
            if limit is not None:
                mono = mono[: max(0, limit - emitted)]
            start = 0
            while len(mono) - start >= block:
                emitted += block
                yield mono[start : start + block]
                start += block
            rest = mono[start:]
            if len(rest) and final:
                emitted += len(rest)
                yield rest
            elif len(rest):
                pending, n_pending = [rest], len(rest)

        def resampled(frame: av.AudioFrame | None) -> list[np.ndarray]:
            nonlocal resampler, layout_name
            if frame is not None and resampler is None:
                layout_name = frame.layout.name
                resampler = av.AudioResampler(format="fltp", layout=layout_name, rate=sample_rate)
            if resampler is None:
                return []
            return [_to_mono(out.to_ndarray()) for out in resampler.resample(frame)]

        def take(arrays: list[np.ndarray]) -> None:
            nonlocal n_pending
            for a in arrays:
                if len(a):
                    pending.append(a)
                    n_pending += len(a)

        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if layout_name is not None and frame.layout.name != layout_name:
                        # Channel layout changed mid-stream: drain and start a new resampler.
                        take(resampled(None))
                        resampler = None
                    take(resampled(frame))
                if n_pending >= block:
                    yield from flush(final=False)
                if limit is not None and emitted + n_pending >= limit:
                    break  # enough audio: stop demuxing (flush trims to the limit)
            else:
                take(resampled(None))  # drain the resampler's delay line at end of file
        except av.FFmpegError as exc:
            raise AudioDecodeError(
                p, f"damaged audio after {emitted / sample_rate:.2f} s ({exc})"
            ) from exc
        yield from flush(final=True)
        if emitted == 0:
            raise AudioDecodeError(p, "no decodable audio samples")
    finally:
        container.close()


def load_audio(
    path: str | Path, sample_rate: int, *, max_seconds: float | None = None
) -> np.ndarray:
    """Decode a whole file to a mono float32 array at ``sample_rate``."""
    blocks = list(iter_audio(path, sample_rate, block_seconds=30.0, max_seconds=max_seconds))
    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate(blocks).astype(np.float32, copy=False)


def probe_duration(path: str | Path) -> float | None:
    """Container-declared duration of the audio track in seconds (None if unknown)."""
    container = _open(path)
    try:
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return float(container.duration) / 1_000_000.0
        return None
    finally:
        container.close()
