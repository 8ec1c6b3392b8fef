"""Decode any audio or short-video file to mono float32 at a chosen rate, with PyAV.

PyAV ships its own FFmpeg, so every container FFmpeg reads works without system
packages: wav, flac, mp3, ogg/opus, m4a/aac, and the audio track of mp4/webm/mov.

Resampling and channel handling happen in FFmpeg's swresample (``av.AudioResampler``),
which streams naturally (``iter_audio``) and measured faster than decoding at the
native rate and resampling in torchaudio (see docs/frontends.md). The mixdown to
mono is done here, as the plain channel mean ((L+R)/2), the convention of Essentia's
MonoLoader that produced the shared HPCP features, instead of FFmpeg's
centre-weighted downmix matrix.

Files come from strangers (``streamcover send``, ``catalog add``, ``identify``), so every
decode here is guarded, in one place (:class:`DecodeLimits`, from ``audio.*`` settings):

* local regular files only: the file is opened here and handed to FFmpeg as a file
  object, so no name is ever read as a URL or protocol, and FFmpeg may open nothing else;
* the demuxer FFmpeg detects must be on ``audio.allowed_containers`` whatever the file's
  extension (a playlist or concat script named ``.mp3`` is refused before it is opened);
* file size, decoded (and declared) duration and time spent decoding are capped: an
  exceeded cap is an :class:`AudioLimitError` naming its setting.

Anything that cannot yield audio (missing file, damaged or unsupported container,
no audio track, no decodable samples) raises ``AudioDecodeError`` naming the file; a
file that breaks off part-way raises :class:`TruncatedAudioError` after the audio
before the break was yielded, so a stream built from it can end as aborted.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from av.container import InputContainer

    from streamcover.config import AudioSettings

__all__ = [
    "AudioDecodeError",
    "AudioLimitError",
    "DecodeLimits",
    "TruncatedAudioError",
    "UnsafeInputError",
    "iter_audio",
    "load_audio",
    "probe_duration",
]

# Demuxers whose declared duration comes from the file's header or its end, never from a
# bitrate estimate: for these, decoding clearly less than declared means the file was cut.
# (mp3 and raw aac declare estimates when they have no index, so they are not checked.)
_EXACT_DURATION = frozenset({"flac", "mov", "matroska", "wav", "w64", "ogg", "aiff", "caf"})
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


class AudioDecodeError(RuntimeError):
    """A file could not be decoded to audio; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode audio from {self.path!s}: {reason}")


class UnsafeInputError(AudioDecodeError):
    """Not a local regular file, or a container kind that may open other files or URLs."""


class AudioLimitError(AudioDecodeError):
    """A file exceeds one of the decode limits; ``setting`` names the knob that sets it."""

    def __init__(self, path: str | Path, limit: str, setting: str, value: float, maximum: float,
                 unit: str) -> None:
        self.limit = limit
        self.setting = setting
        self.value = value
        self.maximum = maximum
        super().__init__(path, f"{limit} {value:.6g} {unit} exceeds the limit of "
                               f"{maximum:.6g} {unit} ({setting})")


class TruncatedAudioError(AudioDecodeError):
    """The file breaks off (cut short or damaged) after ``decoded_seconds`` of audio."""

    def __init__(self, path: str | Path, reason: str, decoded_seconds: float) -> None:
        self.decoded_seconds = decoded_seconds
        super().__init__(path, reason)


@dataclass(frozen=True)
class DecodeLimits:
    """The guards every decode runs under (see module docstring); defaults: ``audio.*``."""

    max_seconds: float = 3 * 3600.0
    max_bytes: int = 2 * 1024**3
    max_decode_seconds: float = 600.0
    allowed_containers: tuple[str, ...] = ("wav", "flac", "mp3", "ogg", "mov", "matroska")

    @classmethod
    def from_settings(cls, audio: AudioSettings) -> DecodeLimits:
        return cls(audio.max_file_seconds, audio.max_file_bytes, audio.max_decode_seconds,
                   tuple(audio.allowed_containers))

    @classmethod
    def default(cls) -> DecodeLimits:
        """The process settings' limits (``get_settings().audio``)."""
        from streamcover.config import get_settings

        return cls.from_settings(get_settings().audio)


class _Clock:
    """Seconds spent inside the decoder, excluding the time its caller holds a block."""

    def __init__(self, path: Path, budget: float) -> None:
        self.path, self.budget = path, budget
        self.used = 0.0
        self._since: float | None = time.perf_counter()

    def pause(self) -> None:
        if self._since is not None:
            self.used += time.perf_counter() - self._since
            self._since = None

    def resume(self) -> None:
        self._since = time.perf_counter()

    def check(self) -> None:
        now = time.perf_counter()
        used = self.used + (now - self._since if self._since is not None else 0.0)
        if used > self.budget:
            raise AudioLimitError(self.path, "decode time", "audio.max_decode_seconds",
                                  used, self.budget, "s")


def _open_local(p: Path, limits: DecodeLimits) -> BinaryIO:
    """Open ``p`` as a local regular file within the size limit (no FIFOs, devices, URLs)."""
    try:
        st = p.stat()
    except FileNotFoundError:
        if _URL.match(str(p)) and not p.parent.exists():
            raise UnsafeInputError(p, "URLs and network protocols are not accepted; "
                                      "only local files") from None
        raise AudioDecodeError(p, "no such file") from None
    except OSError as exc:
        raise AudioDecodeError(p, f"cannot read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise AudioDecodeError(p, "is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeInputError(p, "not a regular file (a pipe, socket or device)")
    try:
        # O_NONBLOCK: a path swapped for a FIFO after the stat cannot block the open.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise AudioDecodeError(p, f"cannot read ({exc.strerror or exc})") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeInputError(p, "not a regular file (a pipe, socket or device)")
    os.set_blocking(fd, True)
    f = os.fdopen(fd, "rb")
    if st.st_size == 0:
        f.close()
        raise AudioDecodeError(p, "empty file")
    if st.st_size > limits.max_bytes:
        f.close()
        raise AudioLimitError(p, "file size", "audio.max_file_bytes", st.st_size,
                              limits.max_bytes, "bytes")
    return f


def _format_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    """FFmpeg demuxer names are comma-separated aliases ("mov,mp4,m4a,…")."""
    return any(part in allowed for part in name.split(","))


def _open(path: str | Path, limits: DecodeLimits) -> tuple[InputContainer, BinaryIO]:
    import av

    p = Path(path)
    f = _open_local(p, limits)
    options = {
        # FFmpeg checks the detected demuxer against this before running it, so a playlist
        # or concat script never gets to open what it names.
        "format_whitelist": ",".join(limits.allowed_containers),
        # Input comes through the file object; nothing may open further files or URLs.
        "protocol_whitelist": "none",
    }
    try:
        container = av.open(f, mode="r", options=options)
    except av.ArgumentError as exc:
        f.close()
        raise UnsafeInputError(
            p, "container format not allowed: not one of audio.allowed_containers "
               f"({', '.join(limits.allowed_containers)}); playlists, concat scripts and "
               "streams that open other files are refused"
        ) from exc
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
        f.close()
        raise AudioDecodeError(p, f"unreadable or unsupported container ({exc})") from exc
    if not _format_allowed(container.format.name, limits.allowed_containers):
        container.close()
        f.close()
        raise UnsafeInputError(p, f"container format {container.format.name!r} is not one of "
                                  "audio.allowed_containers")
    if not container.streams.audio:
        kinds: list[str] = sorted({str(s.type) for s in container.streams}) or ["no streams"]
        container.close()
        f.close()
        raise AudioDecodeError(p, f"no audio track (streams: {', '.join(kinds)})")
    return container, f


def _declared_seconds(container: InputContainer) -> float | None:
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and len(container.streams) == 1:
        return float(container.duration) / 1_000_000.0
    return None


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
    limits: DecodeLimits | None = None,
) -> Iterator[np.ndarray]:
    """Stream a file as mono float32 blocks of ``block_seconds`` at ``sample_rate``.

    Every block but the last has exactly ``round(block_seconds * sample_rate)`` samples,
    so producers can cut fixed-size frames without re-buffering. ``max_seconds`` stops
    early (tests and previews use short excerpts of long tracks); ``limits`` default to
    the settings' (:meth:`DecodeLimits.default`).
    """
    import av

    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    lim = limits or DecodeLimits.default()
    block = max(1, round(block_seconds * sample_rate))
    limit = None if max_seconds is None else max(0, round(max_seconds * sample_rate))
    # A preview shorter than the duration limit may read the start of any longer file.
    guard_duration = max_seconds is None or max_seconds > lim.max_seconds
    cap = round(lim.max_seconds * sample_rate)
    p = Path(path)
    clock = _Clock(p, lim.max_decode_seconds)
    container, fileobj = _open(p, lim)
    emitted = 0
    try:
        declared = _declared_seconds(container)
        if guard_duration and declared is not None and declared > lim.max_seconds:
            raise AudioLimitError(p, "declared duration", "audio.max_file_seconds", declared,
                                  lim.max_seconds, "s")
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
                clock.pause()
                yield mono[start : start + block]
                clock.resume()
                start += block
            rest = mono[start:]
            if len(rest) and final:
                emitted += len(rest)
                clock.pause()
                yield rest
                clock.resume()
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
            if guard_duration and emitted + n_pending > cap:
                raise AudioLimitError(p, "duration", "audio.max_file_seconds",
                                      (emitted + n_pending) / sample_rate, lim.max_seconds, "s")

        complete = False
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if layout_name is not None and frame.layout.name != layout_name:
                        # Channel layout changed mid-stream: drain and start a new resampler.
                        take(resampled(None))
                        resampler = None
                    take(resampled(frame))
                clock.check()
                if n_pending >= block:
                    yield from flush(final=False)
                if limit is not None and emitted + n_pending >= limit:
                    break  # enough audio: stop demuxing (flush trims to the limit)
            else:
                take(resampled(None))  # drain the resampler's delay line at end of file
                complete = True
        except (av.FFmpegError, OSError) as exc:
            yield from flush(final=True)
            raise TruncatedAudioError(
                p, f"damaged or truncated audio after {emitted / sample_rate:.2f} s ({exc})",
                emitted / sample_rate,
            ) from exc
        yield from flush(final=True)
        if emitted == 0:
            raise AudioDecodeError(p, "no decodable audio samples")
        got = emitted / sample_rate
        if (complete and declared is not None and limit is None
                and _format_allowed(container.format.name, tuple(_EXACT_DURATION))
                and got < declared - max(1.0, 0.01 * declared)):
            raise TruncatedAudioError(
                p, f"truncated: {got:.2f} s decoded of the {declared:.2f} s its header declares",
                got,
            )
    finally:
        container.close()
        fileobj.close()


def load_audio(
    path: str | Path,
    sample_rate: int,
    *,
    max_seconds: float | None = None,
    limits: DecodeLimits | None = None,
) -> np.ndarray:
    """Decode a whole file to a mono float32 array at ``sample_rate``."""
    blocks = list(iter_audio(path, sample_rate, block_seconds=30.0, max_seconds=max_seconds,
                             limits=limits))
    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate(blocks).astype(np.float32, copy=False)


def probe_duration(path: str | Path, *, limits: DecodeLimits | None = None) -> float | None:
    """Container-declared duration of the audio track in seconds (None if unknown)."""
    container, fileobj = _open(path, limits or DecodeLimits.default())
    try:
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return float(container.duration) / 1_000_000.0
        return None
    finally:
        container.close()
        fileobj.close()
