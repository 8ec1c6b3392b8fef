"""The variation model: seeded sampling of how one version differs from another.

Pure: the same (seed, work, version) always gives the same parameters, so a
rebuild reproduces the corpus and a resumed build skips exactly what exists.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from streamcover.train.corpus.arrange import ACCOMPANIMENT_STYLES
from streamcover.train.corpus.model import Member, VersionParams, Work

# General MIDI programs grouped by family; a new program is drawn from a family
# that suits the role (a melody on a drum-like patch would not be a cover).
MELODIC_PROGRAMS = (
    list(range(0, 8)) + list(range(16, 24)) + list(range(24, 32)) + list(range(40, 46))
    + list(range(56, 72)) + list(range(72, 80)) + list(range(80, 88)) + [104, 105, 109]
)
ACCOMP_PROGRAMS = list(range(0, 8)) + list(range(16, 22)) + list(range(24, 30)) + [46, 48, 49, 50, 88, 89, 90]

TRANSPOSE_RANGE = 6
TEMPO_RANGE = (0.7, 1.4)
RECORDING_TRANSPOSE = 4
RECORDING_TEMPO = (0.8, 1.25)


def version_seed(seed: int, work_id: str, version: int) -> int:
    digest = hashlib.sha256(f"{seed}|{work_id}|{version}".encode()).hexdigest()
    return int(digest[:12], 16)


def params_digest(params: VersionParams) -> str:
    """Short stable hash of the parameters: part of the file name, so changed params re-render."""
    return hashlib.sha1(json.dumps(params.to_json(), sort_keys=True).encode()).hexdigest()[:10]


def _effects(rng: np.random.Generator, strength: float) -> dict[str, float]:
    fx: dict[str, float] = {}
    if rng.random() < 0.6 * strength:
        fx["low_shelf_db"] = float(rng.uniform(-8, 8))
        fx["high_shelf_db"] = float(rng.uniform(-10, 6))
    if rng.random() < 0.4 * strength:
        fx["peak_db"] = float(rng.uniform(-9, 9))
        fx["peak_hz"] = float(np.exp(rng.uniform(np.log(250), np.log(4000))))
    if rng.random() < 0.1 * strength:  # telephone / small speaker
        fx["highpass_hz"] = float(rng.uniform(200, 500))
        fx["lowpass_hz"] = float(rng.uniform(3000, 5000))
    if rng.random() < 0.2 * strength:
        fx["chorus_mix"] = float(rng.uniform(0.2, 0.6))
    if rng.random() < 0.15 * strength:
        fx["distortion_db"] = float(rng.uniform(6, 24))
    if rng.random() < 0.4 * strength:
        fx["compressor_db"] = float(rng.uniform(-30, -10))
        fx["compressor_ratio"] = float(rng.uniform(2, 8))
    if rng.random() < 0.5 * strength:
        fx["reverb_room"] = float(rng.uniform(0.2, 0.9))
        fx["reverb_wet"] = float(rng.uniform(0.1, 0.45))
    return fx


def sample_params(
    work: Work,
    version: int,
    seed: int,
    *,
    soundfonts: list[str],
    n_voices: dict[str, int],
    backgrounds: list[Member],
    max_seconds: float,
) -> VersionParams:
    """Parameters of version ``version`` of ``work``.

    Version 0 is the plain reference (own key and tempo, default programs, no
    effects); later versions vary. ``n_voices`` gives each member's instrument count.
    """
    vseed = version_seed(seed, work.work_id, version)
    rng = np.random.default_rng(vseed)
    order = np.random.default_rng(version_seed(seed, work.work_id, -1)).permutation(len(work.members))
    member = work.members[int(order[version % len(work.members)])]
    p = VersionParams(version=version, member=member.key, kind=member.kind, seed=vseed, max_seconds=max_seconds)
    if version > 0 and rng.random() < 0.3:
        p.start_offset_s = float(rng.uniform(0, 8))
    if member.kind == "audio":
        if version > 0:
            p.transpose = int(rng.integers(-RECORDING_TRANSPOSE, RECORDING_TRANSPOSE + 1))
            p.tempo = float(np.exp(rng.uniform(np.log(RECORDING_TEMPO[0]), np.log(RECORDING_TEMPO[1]))))
            p.effects = _effects(rng, 1.5)
            _noise_and_background(p, rng, backgrounds)
        return p
    p.soundfont = str(rng.choice(soundfonts)) if version > 0 else soundfonts[0]
    if version == 0:
        return p
    p.transpose = int(rng.integers(-TRANSPOSE_RANGE, TRANSPOSE_RANGE + 1))
    p.tempo = float(np.exp(rng.uniform(np.log(TEMPO_RANGE[0]), np.log(TEMPO_RANGE[1]))))
    voices = n_voices.get(member.key, 1)
    symbolic_score = member.kind in ("music21", "abc")
    if symbolic_score or rng.random() < 0.5:
        # Scores carry no instrumentation: every version picks its own band.
        base = int(rng.choice(MELODIC_PROGRAMS))
        for i in range(voices):
            p.program_map[i] = base if rng.random() < 0.5 else int(rng.choice(MELODIC_PROGRAMS))
    if voices > 1:
        p.drop_voices = [i for i in range(voices) if rng.random() < 0.25]
    p.double_melody = bool(rng.random() < 0.25)
    p.melody_octave = int(rng.choice([-1, 0, 0, 0, 1])) if rng.random() < 0.3 else 0
    p.bass_octave = -1 if rng.random() < 0.2 else 0
    accomp_p = 0.75 if voices == 1 else (0.2 if symbolic_score else 0.0)
    if rng.random() < accomp_p:
        p.accompaniment = str(rng.choice(ACCOMPANIMENT_STYLES))
        p.accompaniment_program = int(rng.choice(ACCOMP_PROGRAMS))
    p.drums = bool(rng.random() < (0.4 if symbolic_score else 0.2))
    p.effects = _effects(rng, 1.0)
    _noise_and_background(p, rng, backgrounds)
    return p


def _noise_and_background(p: VersionParams, rng: np.random.Generator, backgrounds: list[Member]) -> None:
    if rng.random() < 0.3:
        p.noise_snr_db = float(rng.uniform(12, 35))
    if backgrounds and rng.random() < 0.35:
        bg = backgrounds[int(rng.integers(len(backgrounds)))]
        p.background = bg.ref
        p.background_db = float(rng.uniform(-22, -8))
        p.background_offset_s = float(rng.uniform(0, 60))
