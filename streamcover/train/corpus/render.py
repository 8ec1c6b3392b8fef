"""Turning a planned version into audio: synthesis, recordings, effects, noise, background.

MIDI is rendered offline with tinysoundfont (one synth per soundfont, kept per
process); recordings are decoded, then pitch-shifted and time-stretched with
pedalboard's Rubber Band. Output is mono float32 at the corpus sample rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamcover.files import atomic_path
from streamcover.train.corpus.model import VersionParams

_SYNTHS: dict[str, Any] = {}
TAIL_SECONDS = 1.5


def soundfont_paths(debian_dir: Path) -> dict[str, Path]:
    """The soundfonts available: TimGM6mb (pretty_midi), FluidR3_GM and MuseScore General (Debian)."""
    import pretty_midi

    out = {"TimGM6mb": Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"}
    fluid = debian_dir / "fluid-soundfont-gm/usr/share/sounds/sf2/FluidR3_GM.sf2"
    if fluid.exists():
        out["FluidR3_GM"] = fluid
    for mscore in sorted((debian_dir / "musescore-general-soundfont").rglob("MuseScore_General*.sf*")):
        out["MuseScore_General"] = mscore
        break
    return {k: v for k, v in out.items() if v.exists()}


def _synth(path: Path, sample_rate: int) -> tuple[Any, int]:
    import tinysoundfont

    key = f"{path}@{sample_rate}"
    if key not in _SYNTHS:
        synth = tinysoundfont.Synth(samplerate=sample_rate, gain=-6.0)
        sfid = synth.sfload(str(path), max_voices=256)
        _SYNTHS[key] = (synth, sfid)
    return _SYNTHS[key]


def _channels(pm: Any) -> list[tuple[int, Any]]:
    """Assign MIDI channels to instruments (9 = drums); voices beyond 15 share by program."""
    free = [c for c in range(16) if c != 9]
    by_program: dict[int, int] = {}
    out = []
    for inst in pm.instruments:
        if inst.is_drum:
            out.append((9, inst))
        elif inst.program in by_program:
            out.append((by_program[inst.program], inst))
        elif free:
            ch = free.pop(0)
            by_program[inst.program] = ch
            out.append((ch, inst))
        else:
            out.append((next(iter(by_program.values())), inst))
    return out


def synthesize(pm: Any, soundfont: Path, sample_rate: int) -> np.ndarray:
    """Render a PrettyMIDI with tinysoundfont, offline and sample-accurate; mono float32."""
    synth, sfid = _synth(soundfont, sample_rate)
    synth.sounds_off()
    assigned = _channels(pm)
    for ch in range(16):
        synth.control_change(ch, 121, 0)  # reset controllers from the previous render
    events: list[tuple[int, int, int, int, int]] = []  # (sample, order, kind, chan, a, b)
    for ch, inst in assigned:
        try:
            synth.program_select(ch, sfid, 128 if inst.is_drum else 0, 0 if inst.is_drum else inst.program, inst.is_drum)
        except RuntimeError:
            synth.program_select(ch, sfid, 0, 0, False)
        for cc in inst.control_changes:
            if cc.number in (1, 7, 10, 11, 64, 91, 93):
                events.append((int(cc.time * sample_rate), 0, ch, 2, cc.number * 128 + cc.value))
        for pb in inst.pitch_bends:
            events.append((int(pb.time * sample_rate), 0, ch, 3, pb.pitch + 8192))
        for n in inst.notes:
            events.append((int(n.start * sample_rate), 2, ch, 1, n.pitch * 128 + n.velocity))
            events.append((int(n.end * sample_rate), 1, ch, 0, n.pitch * 128))
    events.sort()
    chunks: list[np.ndarray] = []
    pos = 0
    for t, _, ch, kind, val in events:
        if t > pos:
            chunks.append(np.frombuffer(synth.generate(t - pos), dtype=np.float32))
            pos = t
        if kind == 1:
            synth.noteon(ch, val // 128, val % 128)
        elif kind == 0:
            synth.noteoff(ch, val // 128)
        elif kind == 2:
            synth.control_change(ch, val // 128, val % 128)
        else:
            synth.pitchbend(ch, int(np.clip(val, 0, 16383)))
    synth.notes_off()
    chunks.append(np.frombuffer(synth.generate(int(TAIL_SECONDS * sample_rate)), dtype=np.float32))
    synth.sounds_off()
    stereo = np.concatenate(chunks).reshape(-1, 2)
    return stereo.mean(axis=1).astype(np.float32)


def load_recording(path: Path, sample_rate: int, offset_s: float = 0.0, seconds: float | None = None) -> np.ndarray:
    """Decode a recording to mono float32 at ``sample_rate`` (streamcover.audio.decode)."""
    from streamcover.audio.decode import load_audio

    limit = None if seconds is None else offset_s + seconds
    wave = np.asarray(load_audio(path, sample_rate, max_seconds=limit), dtype=np.float32)
    a = int(offset_s * sample_rate)
    b = len(wave) if seconds is None else a + int(seconds * sample_rate)
    return wave[a:b]


_BACKGROUNDS: dict[str, np.ndarray] = {}
_BACKGROUND_CACHE = 6
BACKGROUND_MAX_SECONDS = 240.0


def load_background(path: Path, sample_rate: int, offset_s: float, seconds: float) -> np.ndarray:
    """A segment of a background recording; the first 4 minutes of a few recent files stay decoded."""
    key = f"{path}@{sample_rate}"
    if key not in _BACKGROUNDS:
        if len(_BACKGROUNDS) >= _BACKGROUND_CACHE:
            _BACKGROUNDS.pop(next(iter(_BACKGROUNDS)))
        from streamcover.audio.decode import AudioDecodeError

        try:
            _BACKGROUNDS[key] = load_recording(path, sample_rate, 0.0, BACKGROUND_MAX_SECONDS)
        except AudioDecodeError:
            # Some game tracks have a damaged tail: the first minute and a half still serves.
            _BACKGROUNDS[key] = load_recording(path, sample_rate, 0.0, 90.0)
    wave = _BACKGROUNDS[key]
    a = int(offset_s * sample_rate) % max(len(wave), 1)
    return wave[a : a + int(seconds * sample_rate)]


def recording_seconds(path: Path) -> float:
    """Duration from the container header (0.0 when unknown or unreadable)."""
    from streamcover.audio.decode import AudioDecodeError, probe_duration

    try:
        return float(probe_duration(path) or 0.0)
    except (AudioDecodeError, OSError):
        return 0.0


def pseudo_version(wave: np.ndarray, sample_rate: int, params: VersionParams) -> np.ndarray:
    """A recording pitch-shifted and time-stretched (Rubber Band) — the same work, re-performed."""
    if params.transpose == 0 and abs(params.tempo - 1.0) < 1e-3:
        return wave
    import pedalboard

    out = pedalboard.time_stretch(
        wave[None, :].astype(np.float32), float(sample_rate),
        stretch_factor=float(params.tempo), pitch_shift_in_semitones=float(params.transpose),
        high_quality=False,
    )
    return np.asarray(out[0], dtype=np.float32)


def apply_effects(wave: np.ndarray, sample_rate: int, effects: dict[str, float]) -> np.ndarray:
    """Studio/room colouring: EQ, compression, chorus, distortion, reverb, telephone band."""
    import pedalboard as pb

    chain: list[Any] = []
    if "low_shelf_db" in effects:
        chain.append(pb.LowShelfFilter(cutoff_frequency_hz=200.0, gain_db=effects["low_shelf_db"]))
    if "peak_db" in effects:
        chain.append(pb.PeakFilter(cutoff_frequency_hz=effects.get("peak_hz", 1000.0), gain_db=effects["peak_db"], q=1.0))
    if "high_shelf_db" in effects:
        chain.append(pb.HighShelfFilter(cutoff_frequency_hz=3000.0, gain_db=effects["high_shelf_db"]))
    if "lowpass_hz" in effects:
        chain.append(pb.LowpassFilter(cutoff_frequency_hz=effects["lowpass_hz"]))
    if "highpass_hz" in effects:
        chain.append(pb.HighpassFilter(cutoff_frequency_hz=effects["highpass_hz"]))
    if "chorus_mix" in effects:
        chain.append(pb.Chorus(mix=effects["chorus_mix"]))
    if "distortion_db" in effects:
        chain.append(pb.Distortion(drive_db=effects["distortion_db"]))
    if "compressor_db" in effects:
        chain.append(pb.Compressor(threshold_db=effects["compressor_db"], ratio=effects.get("compressor_ratio", 4.0)))
    if "reverb_room" in effects:
        chain.append(pb.Reverb(room_size=effects["reverb_room"], wet_level=effects.get("reverb_wet", 0.3)))
    if not chain:
        return wave
    return np.asarray(pb.Pedalboard(chain)(wave[None, :].astype(np.float32), float(sample_rate))[0], np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def mix_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White or pink-ish noise at a signal-to-noise ratio."""
    noise = rng.standard_normal(len(wave)).astype(np.float32)
    if rng.random() < 0.5:  # pink-ish: integrate then remove drift
        noise = np.cumsum(noise) * 0.02
        noise -= np.convolve(noise, np.ones(256) / 256, mode="same")
    scale = _rms(wave) / max(_rms(noise), 1e-9) * 10 ** (-snr_db / 20)
    return (wave + scale * noise).astype(np.float32)


def mix_background(wave: np.ndarray, background: np.ndarray, level_db: float) -> np.ndarray:
    """Real music underneath, ``level_db`` below the version (looped to length)."""
    if not len(background) or not _rms(background):
        return wave
    reps = int(np.ceil(len(wave) / len(background)))
    bg = np.tile(background, reps)[: len(wave)]
    scale = _rms(wave) / _rms(bg) * 10 ** (level_db / 20)
    return (wave + scale * bg).astype(np.float32)


def finish(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Loudness varied over ±6 dB around −20 dBFS RMS, peaks kept below full scale."""
    target = 10 ** ((-20.0 + float(rng.uniform(-6, 6))) / 20)
    out = wave * (target / max(_rms(wave), 1e-9))
    peak = float(np.max(np.abs(out))) if len(out) else 0.0
    if peak > 0.98:
        out = out * (0.98 / peak)
    return out.astype(np.float32)


def write_audio(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """Write FLAC (or OGG by suffix) atomically: a partial file, then rename."""
    from pedalboard.io import AudioFile

    with atomic_path(path) as tmp, AudioFile(str(tmp), "w", samplerate=sample_rate,
                                             num_channels=1) as f:
        f.write(wave[None, :].astype(np.float32))
