"""Small synthetic "works" for the demo and the end-to-end tests, rendered with numpy.

A work is a seeded score: a chord progression plus a melody over it, repeated in
sections. A *version* of a work renders the same score with its own key (transposition),
tempo, timbre (harmonic profile, envelope), level and noise, which is what a cover changes
while keeping the melody and harmony. Rendering is fast (additive synthesis per note) and
deterministic, so the demo needs no downloads and the tests know the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_PROGRESSIONS = ([0, 5, 3, 4], [0, 3, 4, 4], [0, 4, 5, 3], [5, 3, 0, 4], [0, 2, 3, 4], [0, 5, 1, 4])


@dataclass(frozen=True)
class Note:
    start: float  # beats
    length: float  # beats
    pitch: int  # MIDI


@dataclass(frozen=True)
class Score:
    title: str
    notes: tuple[Note, ...]
    beats: float
    bpm: float


@dataclass(frozen=True)
class Version:
    """How one performance differs from the score."""

    transpose: int = 0
    tempo: float = 1.0
    timbre: int = 0
    gain: float = 0.5
    noise: float = 0.0
    seed: int = 0


def make_score(seed: int, seconds: float = 90.0, title: str | None = None) -> Score:
    """A seeded work: 4-bar chord loop, a melody per section, bass and chords."""
    rng = np.random.default_rng(seed)
    bpm = float(rng.uniform(84, 132))
    tonic = 48 + int(rng.integers(0, 12))
    prog = _PROGRESSIONS[int(rng.integers(0, len(_PROGRESSIONS)))]
    total_beats = seconds * bpm / 60.0
    motifs = [_motif(rng) for _ in range(3)]
    form = [0, 1, 0, 2, 1, 0, 2, 1]
    notes: list[Note] = []
    beat = 0.0
    section = 0
    while beat < total_beats:
        motif = motifs[form[section % len(form)]]
        for bar in range(4):
            degree = prog[bar]
            root = tonic + int(_MAJOR[degree % 7])
            b0 = beat + bar * 4
            notes.append(Note(b0, 4.0, root - 12))  # bass
            for k in (0, 2, 4):  # triad
                d = degree + k
                notes.append(Note(b0, 4.0, tonic + 12 * (d // 7) + int(_MAJOR[d % 7])))
            for st, ln, deg in motif[bar]:
                d = degree + deg
                notes.append(Note(b0 + st, ln, tonic + 12 + 12 * (d // 7) + int(_MAJOR[d % 7])))
        beat += 16
        section += 1
    return Score(title or f"Work {seed}", tuple(n for n in notes if n.start < total_beats),
                 total_beats, bpm)


def _motif(rng: np.random.Generator) -> list[list[tuple[float, float, int]]]:
    bars = []
    for _ in range(4):
        t = 0.0
        bar = []
        while t < 4.0:
            ln = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
            ln = min(ln, 4.0 - t)
            bar.append((t, ln, int(rng.integers(-2, 9))))
            t += ln
        bars.append(bar)
    return bars


_TIMBRES = (
    np.array([1.0, 0.5, 0.33, 0.25, 0.2, 0.16]),  # saw-ish
    np.array([1.0, 0.0, 0.33, 0.0, 0.2, 0.0]),  # square-ish (odd harmonics)
    np.array([1.0, 0.8, 0.2, 0.4, 0.05, 0.1]),  # organ-ish
    np.array([1.0, 0.15, 0.05]),  # flute-ish
)


def render(score: Score, version: Version = Version(), sample_rate: int = 22_050,
           seconds: float | None = None) -> np.ndarray:
    """Mono float32 audio of ``score`` performed as ``version``."""
    spb = 60.0 / (score.bpm * version.tempo)
    dur = score.beats * spb if seconds is None else seconds
    n = round(dur * sample_rate)
    out = np.zeros(n + sample_rate, dtype=np.float32)
    harm = _TIMBRES[version.timbre % len(_TIMBRES)]
    attack = 0.01 + 0.04 * (version.timbre % 3)
    for note in score.notes:
        s0 = round(note.start * spb * sample_rate)
        if s0 >= n:
            continue
        length = round(note.length * spb * sample_rate)
        t = np.arange(length, dtype=np.float32) / sample_rate
        f0 = 440.0 * 2 ** ((note.pitch + version.transpose - 69) / 12)
        wave = np.zeros(length, dtype=np.float32)
        for h, a in enumerate(harm, start=1):
            if a and f0 * h < sample_rate / 2 - 500:
                wave += a * np.sin(2 * np.pi * f0 * h * t, dtype=np.float32)
        env = np.minimum(1.0, t / attack) * np.exp(-t * (1.5 + version.timbre % 2))
        env[-min(length, 200):] *= np.linspace(1, 0, min(length, 200), dtype=np.float32)
        level = 0.5 if note.pitch < 60 else 0.8
        out[s0 : s0 + length] += (level * env * wave)[: len(out) - s0]
    out = out[:n]
    peak = float(np.abs(out).max()) or 1.0
    out *= version.gain / peak
    if version.noise:
        rng = np.random.default_rng(version.seed)
        out += version.noise * rng.standard_normal(n).astype(np.float32)
    return np.clip(out, -1, 1).astype(np.float32)
