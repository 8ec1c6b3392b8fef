"""Decoding real files of every supported container, written here with PyAV's own encoders."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest

from streamcover.audio.decode import (
    AudioDecodeError,
    AudioLimitError,
    DecodeLimits,
    TruncatedAudioError,
    UnsafeInputError,
    iter_audio,
    load_audio,
    probe_duration,
)
from streamcover.config import AudioSettings

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


# ---- untrusted input: limits, local files only, allowed containers, truncation -------------

OPEN = DecodeLimits.from_settings(AudioSettings())


def _limit_error(path: Path, limits: DecodeLimits, **kw: float) -> AudioLimitError:
    with pytest.raises(AudioLimitError) as info:
        load_audio(path, 22_050, limits=limits, **kw)
    assert str(path) in str(info.value)
    assert info.value.setting in str(info.value)
    return info.value


def test_defaults_come_from_settings() -> None:
    audio = AudioSettings(max_file_seconds=60, max_file_bytes=4096, max_decode_seconds=2,
                          allowed_containers=("wav",))
    lim = DecodeLimits.from_settings(audio)
    assert (lim.max_seconds, lim.max_bytes, lim.max_decode_seconds) == (60, 4096, 2)
    assert lim.allowed_containers == ("wav",)
    assert OPEN.max_seconds == 3 * 3600 and OPEN.max_bytes == 2 * 1024**3


def test_file_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "t.flac"
    write_media(path, "flac", "flac", seconds=2.0)
    size = path.stat().st_size
    err = _limit_error(path, DecodeLimits(max_bytes=size - 1))
    assert err.setting == "audio.max_file_bytes" and err.value == size
    assert len(load_audio(path, 22_050, limits=DecodeLimits(max_bytes=size))) > 0


def test_declared_duration_limit_refuses_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "t.flac"
    write_media(path, "flac", "flac", seconds=5.0)
    err = _limit_error(path, DecodeLimits(max_seconds=4.0))
    assert err.setting == "audio.max_file_seconds" and err.limit == "declared duration"
    assert err.value == pytest.approx(5.0, abs=0.01)
    # A preview no longer than the limit may still read the start of a longer file.
    x = load_audio(path, 22_050, max_seconds=3.0, limits=DecodeLimits(max_seconds=4.0))
    assert len(x) == 3 * 22_050


def test_decoded_duration_limit_without_a_declared_duration(tmp_path: Path) -> None:
    # WebM with video: the audio track declares no duration of its own.
    path = tmp_path / "clip.webm"
    write_media(path, "webm", "libopus", 48_000, video="libvpx-vp9", seconds=3.0)
    blocks: list[np.ndarray] = []
    with pytest.raises(AudioLimitError) as info:
        for b in iter_audio(path, 22_050, block_seconds=0.25, limits=DecodeLimits(max_seconds=1.0)):
            blocks.append(b)
    assert info.value.limit == "duration" and info.value.setting == "audio.max_file_seconds"
    # Never more than the limit was handed out before the error.
    assert sum(len(b) for b in blocks) <= 22_050


def test_decode_time_budget(tmp_path: Path) -> None:
    path = tmp_path / "t.flac"
    write_media(path, "flac", "flac", seconds=3.0)
    err = _limit_error(path, DecodeLimits(max_decode_seconds=1e-6))
    assert err.setting == "audio.max_decode_seconds"


def test_decode_time_excludes_the_callers_time(tmp_path: Path) -> None:
    import time

    path = tmp_path / "t.flac"
    write_media(path, "flac", "flac", seconds=3.0)
    t0 = time.perf_counter()
    n = 0
    for _ in iter_audio(path, 22_050, block_seconds=0.5, limits=DecodeLimits(max_decode_seconds=1.0)):
        time.sleep(0.2)  # a realtime sender waiting between blocks
        n += 1
    assert n == 6 and time.perf_counter() - t0 > 1.0


def test_concat_script_named_mp3_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "secret.flac"
    write_media(target, "flac", "flac")
    # Plain FFmpeg opens this as a concat script and reads the file it names.
    script = tmp_path / "song.mp3"
    script.write_text(f"ffconcat version 1.0\nfile '{target.name}'\n")
    with av.open(str(script)) as c:
        assert c.format.name == "concat"
    with pytest.raises(UnsafeInputError) as info:
        load_audio(script, 22_050)
    assert "audio.allowed_containers" in info.value.reason and str(script) in str(info.value)


@pytest.mark.parametrize("name", ["list.m3u8", "list.mp3"])
def test_hls_playlist_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n"
                    "http://127.0.0.1:9/seg.ts\n#EXT-X-ENDLIST\n")
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, 22_050)
    assert str(path) in str(info.value)


def test_a_container_off_the_allow_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.flac"
    write_media(path, "flac", "flac")
    with pytest.raises(UnsafeInputError) as info:
        load_audio(path, 22_050, limits=DecodeLimits(allowed_containers=("wav",)))
    assert "not allowed" in info.value.reason


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/song.mp3", "rtmp://example.invalid/live",
                                 "file:///nonexistent/x.wav"])
def test_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeInputError) as info:
        load_audio(url, 22_050)
    assert "only local files" in info.value.reason


def test_a_local_file_with_a_protocol_like_name_is_read_as_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_media(tmp_path / "x.wav", "wav", "pcm_s16le")
    (tmp_path / "x.wav").rename(tmp_path / "http:x.wav")
    assert abs(len(load_audio("http:x.wav", 22_050)) / 22_050 - DUR) < 0.01


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeInputError) as info:
        load_audio(fifo, 22_050)
    assert "not a regular file" in info.value.reason


def _cut(path: Path, fraction: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize(("name", "fmt", "codec"), [("cut.flac", "flac", "flac"),
                                                      ("cut.mka", "matroska", "flac")])
def test_truncated_file_yields_its_audio_then_raises(
    tmp_path: Path, name: str, fmt: str, codec: str
) -> None:
    path = tmp_path / name
    write_media(path, fmt, codec, seconds=10.0)
    _cut(path)
    blocks: list[np.ndarray] = []
    with pytest.raises(TruncatedAudioError) as info:
        for b in iter_audio(path, 22_050, block_seconds=1.0):
            blocks.append(b)
    got = sum(len(b) for b in blocks) / 22_050
    assert 3.0 < got < 8.0
    assert info.value.decoded_seconds == pytest.approx(got, abs=1e-6)
    assert str(path) in str(info.value)


def test_truncated_preview_is_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.mka"
    write_media(path, "matroska", "flac", seconds=10.0)
    _cut(path)
    assert len(load_audio(path, 22_050, max_seconds=2.0)) == 2 * 22_050


def test_catalog_add_and_identify_decode_through_the_same_guards(tmp_path: Path) -> None:
    """``catalog add`` and ``identify`` embed files with Encoder.embed: the same refusals."""
    from streamcover.config import Settings
    from streamcover.model.config import EncoderConfig
    from streamcover.model.inference import Encoder

    tiny = {"layers": (1, 1, 1, 1), "widths": (4, 8, 8, 16), "stem_channels": 8}
    enc = Encoder.untrained(EncoderConfig.compact("hpcp", **tiny), seed=1,
                            settings=Settings(_env_file=None, encoder={"threads": 1}))
    target = tmp_path / "a.flac"
    write_media(target, "flac", "flac", seconds=12.0)
    script = tmp_path / "b.mp3"
    script.write_text(f"ffconcat version 1.0\nfile '{target.name}'\n")
    with pytest.raises(UnsafeInputError):
        enc.embed(script)
    _cut(target)
    with pytest.raises(TruncatedAudioError):
        enc.embed(target)
