"""Decoding real files of every supported container, written here with PyAV's own encoders."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest

from streamcover.audio.decode import AudioDecodeError, iter_audio, load_audio, probe_duration

SR_IN = 44_100
DUR = 3.0
F_LEFT, F_RIGHT = 440.0, 660.0  # different tones per channel: the mixdown must contain both


def _signal(sr: int, seconds: float = DUR) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    left = 0.5 * np.sin(2 * np.pi * F_LEFT * t)
    right = 0.3 * np.sin(2 * np.pi * F_RIGHT * t)
    return np.stack([left, right]).astype(np.float32)


def write_media(
    path: Path,
    fmt: str,
    codec: str | None,
    sr: int = SR_IN,
    *,
    video: str | None = None,
    seconds: float = DUR,
    channels: int = 2,
) -> np.ndarray:
    """Encode the test signal (and optionally a video track) into ``path``; return the audio."""
    data = _signal(sr, seconds)[:channels]
    out = av.open(str(path), "w", format=fmt)
    vstream = None
    if video:
        vstream = out.add_stream(video, rate=10)
        vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
    if codec:
        astream = out.add_stream(codec, rate=sr)
        astream.layout = "stereo" if channels == 2 else "mono"
        for i in range(0, data.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data[:, i : i + 1024]),
                format="fltp",
                layout=astream.layout.name,
            )
            frame.sample_rate = sr
            frame.pts = i
            frame.time_base = fractions.Fraction(1, sr)
            for packet in astream.encode(frame):
                out.mux(packet)
        for packet in astream.encode(None):
            out.mux(packet)
    if vstream is not None:
        for i in range(int(seconds * 10)):
            img = np.full((48, 64, 3), (i * 7) % 255, dtype=np.uint8)
            for packet in vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vstream.encode(None):
            out.mux(packet)
    out.close()
    return data


def _tone_level(x: np.ndarray, sr: int, freq: float) -> float:
    """Amplitude of a sinusoid at ``freq`` in the middle second of ``x`` (Hann-windowed DFT)."""
    mid = x[len(x) // 2 - sr // 2 : len(x) // 2 + sr // 2]
    win = np.hanning(len(mid))
    spec = np.abs(np.fft.rfft(mid * win)) * 2 / win.sum()
    k = round(freq * len(mid) / sr)
    return float(spec[k - 2 : k + 3].max())


CONTAINERS = [
    # name, format, audio codec, video codec, encoder rate, lossless
    ("tone.wav", "wav", "pcm_s16le", None, 44_100, True),
    ("tone.flac", "flac", "flac", None, 44_100, True),
    ("tone.mp3", "mp3", "libmp3lame", None, 44_100, False),
    ("tone.ogg", "ogg", "libopus", None, 48_000, False),
    ("tone.opus", "opus", "libopus", None, 48_000, False),
    ("tone.m4a", "ipod", "aac", None, 44_100, False),
    ("clip.mp4", "mp4", "aac", "mpeg4", 44_100, False),
    ("clip.webm", "webm", "libopus", "libvpx-vp9", 48_000, False),
    ("clip.mov", "mov", "aac", "mpeg4", 44_100, False),
]


@pytest.mark.parametrize(("name", "fmt", "codec", "video", "rate", "lossless"), CONTAINERS)
@pytest.mark.parametrize("target", [22_050, 44_100])
def test_decode_container(
    tmp_path: Path,
    name: str,
    fmt: str,
    codec: str,
    video: str | None,
    rate: int,
    lossless: bool,
    target: int,
) -> None:
    path = tmp_path / name
    original = write_media(path, fmt, codec, rate, video=video)
    x = load_audio(path, target)
    assert x.dtype == np.float32 and x.ndim == 1
    # Duration: codecs add at most a few tens of ms of priming/padding.
    assert abs(len(x) / target - DUR) < 0.06, len(x) / target
    # Content: the mono mix is the channel mean, so each tone keeps half its amplitude.
    assert _tone_level(x, target, F_LEFT) == pytest.approx(0.25, abs=0.02)
    assert _tone_level(x, target, F_RIGHT) == pytest.approx(0.15, abs=0.02)
    if lossless:
        # Resample the reference with numpy's FFT method and compare sample by sample.
        mono = original.mean(axis=0)
        n = len(x)
        ref = np.fft.irfft(np.fft.rfft(mono), n=round(len(mono) * target / rate)) * target / rate
        m = min(n, len(ref)) - 2000
        assert np.corrcoef(x[1000:m], ref[1000:m])[0, 1] > 0.999


def test_iter_audio_blocks_match_load(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    write_media(path, "flac", "flac", 44_100, seconds=7.3)
    full = load_audio(path, 22_050)
    blocks = list(iter_audio(path, 22_050, block_seconds=0.5))
    size = round(0.5 * 22_050)
    assert all(len(b) == size for b in blocks[:-1])
    assert 0 < len(blocks[-1]) <= size
    np.testing.assert_array_equal(np.concatenate(blocks), full)


def test_iter_audio_stops_at_max_seconds(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    write_media(path, "flac", "flac", 44_100, seconds=7.3)
    blocks = list(iter_audio(path, 22_050, block_seconds=0.5, max_seconds=2.2))
    assert sum(len(b) for b in blocks) == round(2.2 * 22_050)
    np.testing.assert_array_equal(
        np.concatenate(blocks), load_audio(path, 22_050)[: len(np.concatenate(blocks))]
    )


def test_max_seconds_and_probe(tmp_path: Path) -> None:
    path = tmp_path / "t.flac"
    write_media(path, "flac", "flac", 44_100, seconds=5.0)
    x = load_audio(path, 16_000, max_seconds=2.0)
    assert len(x) == 32_000
    assert probe_duration(path) == pytest.approx(5.0, abs=0.01)


def test_mono_source(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    write_media(path, "wav", "pcm_s16le", 44_100, channels=1)
    x = load_audio(path, 22_050)
    assert _tone_level(x, 22_050, F_LEFT) == pytest.approx(0.5, abs=0.02)


def test_real_music_decodes(music_tracks: list[Path]) -> None:
    x = load_audio(music_tracks[0], 22_050, max_seconds=20.0)
    assert len(x) == 20 * 22_050
    assert 0.01 < float(np.sqrt(np.mean(x**2))) < 1.0
    duration = probe_duration(music_tracks[0])
    assert duration is not None and duration > 60


def _assert_error(path: Path, reason: str) -> None:
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, 22_050)
    assert str(path) in str(info.value)
    assert reason in info.value.reason, info.value.reason


def test_missing_file(tmp_path: Path) -> None:
    _assert_error(tmp_path / "nope.mp3", "no such file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _assert_error(path, "empty file")


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, 22_050)
    assert str(path) in str(info.value)


def test_truncated_m4a(tmp_path: Path) -> None:
    # MP4/M4A keep their index (moov) at the end: cutting the file loses it.
    path = tmp_path / "cut.m4a"
    write_media(path, "ipod", "aac", 44_100)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_error(path, "unreadable or unsupported container")


def test_truncated_wav_header(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    write_media(path, "wav", "pcm_s16le", 44_100)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, 22_050)
    assert "cut.wav" in str(info.value)


def test_video_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    write_media(path, "mp4", None, video="mpeg4")
    _assert_error(path, "no audio track")


def test_directory(tmp_path: Path) -> None:
    _assert_error(tmp_path, "is a directory")


def test_bad_rate(tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    write_media(path, "wav", "pcm_s16le")
    with pytest.raises(ValueError):
        load_audio(path, 0)
