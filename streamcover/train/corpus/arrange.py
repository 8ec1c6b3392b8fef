"""Re-arranging a MIDI performance the way covers differ (pure transforms on PrettyMIDI).

Key, tempo, instrumentation, voices dropped or doubled, octave moves, a generated
accompaniment (harmonised from the melody) and a drum part. Nothing here touches files.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np

from streamcover.train.corpus.model import VersionParams

# Krumhansl–Kessler key profiles (major, minor), used to pick the diatonic chords.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# Diatonic triads as (root offset, quality intervals) for major and (harmonic) minor keys.
_MAJOR_TRIADS = [(0, (0, 4, 7)), (2, (0, 3, 7)), (4, (0, 3, 7)), (5, (0, 4, 7)), (7, (0, 4, 7)), (9, (0, 3, 7))]
_MINOR_TRIADS = [(0, (0, 3, 7)), (3, (0, 4, 7)), (5, (0, 3, 7)), (7, (0, 4, 7)), (8, (0, 4, 7)), (10, (0, 4, 7))]
_PRIMARY_BONUS = {0: 0.3, 5: 0.15, 7: 0.2}

ACCOMPANIMENT_STYLES = ("block", "arpeggio", "bass_chord", "alberti")


def melody_index(pm: Any) -> int:
    """The instrument carrying the tune: the first part for scores, else the highest busy voice."""
    voices = [(i, inst) for i, inst in enumerate(pm.instruments) if not inst.is_drum and inst.notes]
    if not voices:
        raise ValueError("no pitched notes")
    total = sum(len(inst.notes) for _, inst in voices)
    busy = [(i, inst) for i, inst in voices if len(inst.notes) >= 0.1 * total] or voices
    return max(busy, key=lambda v: float(np.mean([n.pitch for n in v[1].notes])))[0]


def estimate_key(notes: list[Any]) -> tuple[int, bool]:
    """(tonic pitch class, is_major) by correlating the duration-weighted pitch-class profile."""
    hist = np.zeros(12)
    for n in notes:
        hist[n.pitch % 12] += n.end - n.start
    best = (-2.0, 0, True)
    for tonic in range(12):
        for major, prof in ((True, _MAJOR), (False, _MINOR)):
            r = float(np.corrcoef(hist, np.roll(prof, tonic))[0, 1]) if hist.any() else 0.0
            if r > best[0]:
                best = (r, tonic, major)
    return best[1], best[2]


def harmonise(melody: list[Any], bounds: list[float], tonic: int, major: bool) -> list[list[int]]:
    """One diatonic triad (pitch classes) per segment, the one that covers the melody best."""
    triads = _MAJOR_TRIADS if major else _MINOR_TRIADS
    chords = []
    prev: list[int] | None = None
    for a, b in itertools.pairwise(bounds):
        weights = np.zeros(12)
        for n in melody:
            overlap = min(n.end, b) - max(n.start, a)
            if overlap > 0:
                weights[n.pitch % 12] += overlap
        best_score, best = -1.0, [0, 4, 7]
        for off, quality in triads:
            pcs = [(tonic + off + q) % 12 for q in quality]
            score = float(weights[pcs].sum()) / max(float(weights.sum()), 1e-6)
            score += _PRIMARY_BONUS.get(off, 0.0)
            if prev is not None and pcs == prev:
                score += 0.05
            if score > best_score:
                best_score, best = score, pcs
        chords.append(best)
        prev = best
    return chords


def _voiced(pcs: list[int], low: int) -> list[int]:
    """Close-position chord tones at or above ``low``."""
    out = []
    for pc in pcs:
        p = low + ((pc - low) % 12)
        out.append(p)
    return sorted(out)


def add_accompaniment(pm: Any, style: str, program: int, rng: np.random.Generator) -> None:
    """Append an accompaniment (and for bass_chord a bass) harmonised from the melody."""
    import pretty_midi

    mel = pm.instruments[melody_index(pm)].notes
    end = max(n.end for n in mel)
    beats = [float(b) for b in pm.get_beats() if b < end] or [0.0]
    per = 2 if style in ("block", "bass_chord") else 1
    bounds = [*beats[::per], end]
    tonic, major = estimate_key([n for inst in pm.instruments if not inst.is_drum for n in inst.notes])
    chords = harmonise(mel, bounds, tonic, major)
    acc = pretty_midi.Instrument(program=program, name="accompaniment")
    bass = pretty_midi.Instrument(program=int(rng.choice([32, 33, 34, 35])), name="bass")
    vel = int(rng.integers(55, 80))
    low = int(np.clip(min(n.pitch for n in mel) - 12, 40, 60))
    for (a, b), pcs in zip(itertools.pairwise(bounds), chords, strict=False):
        tones = _voiced(pcs, low)
        if b - a <= 0.05:
            continue
        if style == "block":
            for p in tones:
                acc.notes.append(pretty_midi.Note(vel, p, a, b * 0.98 + a * 0.02))
        elif style == "arpeggio":
            step = (b - a) / 4
            for k, p in enumerate([*tones, tones[1]]):
                acc.notes.append(pretty_midi.Note(vel, p, a + k * step, a + (k + 1) * step))
        elif style == "alberti":
            step = (b - a) / 4
            for k, p in enumerate([tones[0], tones[2], tones[1], tones[2]]):
                acc.notes.append(pretty_midi.Note(vel, p, a + k * step, a + (k + 1) * step))
        else:  # bass_chord: root low on the first half, chord on the second
            mid = (a + b) / 2
            bass.notes.append(pretty_midi.Note(vel + 10, tones[0] - 12, a, mid))
            for p in tones:
                acc.notes.append(pretty_midi.Note(vel - 5, p, mid, b))
    pm.instruments.append(acc)
    if bass.notes:
        pm.instruments.append(bass)


def add_drums(pm: Any, rng: np.random.Generator) -> None:
    """A plain kit groove on the beat grid: kick on downbeats, snare between, hats on eighths."""
    import pretty_midi

    end = pm.get_end_time()
    beats = [float(b) for b in pm.get_beats() if b < end]
    downbeats = {round(float(d), 4) for d in pm.get_downbeats()}
    if len(beats) < 2:
        return
    kit = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    vel = int(rng.integers(60, 95))
    for i, b in enumerate(beats):
        nxt = beats[i + 1] if i + 1 < len(beats) else b + (beats[-1] - beats[-2])
        drum = 36 if round(b, 4) in downbeats else (38 if i % 2 else 36)
        kit.notes.append(pretty_midi.Note(vel, drum, b, b + 0.1))
        for h in (b, (b + nxt) / 2):
            kit.notes.append(pretty_midi.Note(vel - 20, 42, h, h + 0.05))
    pm.instruments.append(kit)


def _shift(inst: Any, semitones: int) -> None:
    for n in inst.notes:
        p = n.pitch + semitones
        while p > 108:
            p -= 12
        while p < 21:
            p += 12
        n.pitch = p


def _repeat_to(pm: Any, min_seconds: float) -> None:
    """Play a short tune through again (whole passes) until it lasts ``min_seconds``."""
    end = pm.get_end_time()
    if end <= 0 or end >= min_seconds:
        return
    beats = pm.get_beats()
    period = float(len(beats) * (beats[1] - beats[0])) if len(beats) > 1 else end
    period = max(period, end)
    passes = int(np.ceil(min_seconds / period))
    for inst in pm.instruments:
        base = list(inst.notes)
        for k in range(1, passes):
            for n in base:
                inst.notes.append(type(n)(n.velocity, n.pitch, n.start + k * period, n.end + k * period))


def arrange(pm_in: Any, params: VersionParams, rng: np.random.Generator) -> Any:
    """A new PrettyMIDI: the input re-arranged, transposed, re-timed and cropped per ``params``."""
    pm = copy.deepcopy(pm_in)
    _repeat_to(pm, params.min_seconds)
    pitched = [i for i, inst in enumerate(pm.instruments) if not inst.is_drum and inst.notes]
    if not pitched:
        raise ValueError("no pitched notes")
    mel_i = melody_index(pm)
    # Programs first (indices refer to the original instrument order).
    for i, prog in params.program_map.items():
        if 0 <= i < len(pm.instruments) and not pm.instruments[i].is_drum:
            pm.instruments[i].program = int(prog)
    melody = pm.instruments[mel_i]
    if params.melody_octave:
        _shift(melody, 12 * params.melody_octave)
    if params.bass_octave and len(pitched) > 1:
        lowest = min(pitched, key=lambda i: float(np.mean([n.pitch for n in pm.instruments[i].notes])))
        if lowest != mel_i:
            _shift(pm.instruments[lowest], 12 * params.bass_octave)
    if params.double_melody:
        import pretty_midi

        dbl = pretty_midi.Instrument(program=int(rng.integers(0, 80)), name="doubling")
        interval = 12 if float(np.mean([n.pitch for n in melody.notes])) < 72 else -12
        for n in melody.notes:
            dbl.notes.append(pretty_midi.Note(max(1, n.velocity - 15), n.pitch + interval, n.start, n.end))
        pm.instruments.append(dbl)
    keep = [inst for i, inst in enumerate(pm.instruments) if i == mel_i or i not in params.drop_voices]
    pm.instruments = keep
    if params.accompaniment != "none":
        add_accompaniment(pm, params.accompaniment, params.accompaniment_program, rng)
    if params.drums:
        if any(inst.is_drum for inst in pm.instruments):
            pass  # the arrangement already has drums
        else:
            add_drums(pm, rng)
    for inst in pm.instruments:
        if not inst.is_drum and params.transpose:
            _shift(inst, params.transpose)
    # Tempo: stretch all event times; then crop to the window and start at zero.
    scale = 1.0 / params.tempo
    start = params.start_offset_s
    stop = start + params.max_seconds
    for inst in pm.instruments:
        notes = []
        for n in inst.notes:
            n.start, n.end = n.start * scale, n.end * scale
            if n.start >= start and n.start < stop:
                n.start, n.end = n.start - start, min(n.end, stop) - start
                notes.append(n)
        inst.notes = notes
        for ev in (*inst.control_changes, *inst.pitch_bends):
            ev.time = max(0.0, ev.time * scale - start)
    pm.instruments = [inst for inst in pm.instruments if inst.notes]
    if not pm.instruments:
        raise ValueError("nothing left after cropping")
    return pm
