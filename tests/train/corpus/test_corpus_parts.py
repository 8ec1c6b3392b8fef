"""The pure parts of the corpus builder: title matching, melody grouping, split, variation, arrangement."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from streamcover.train.corpus.arrange import arrange, estimate_key, harmonise
from streamcover.train.corpus.build import budgets, split_works
from streamcover.train.corpus.debian import extract_wad_music
from streamcover.train.corpus.melody import cluster_melodies, melody_similarity, normalise_title
from streamcover.train.corpus.model import Member, VersionParams, Work
from streamcover.train.corpus.variation import params_digest, sample_params

TUNE = [67, 67, 69, 71, 67, 71, 69, 62, 67, 67, 69, 71, 67, 66, 62, 67, 69, 71, 72, 71, 69, 67]


def test_titles_match_across_collections() -> None:
    assert normalise_title("The Boyne Hunt") == normalise_title("THE BOYNE HUNT -- REEL")
    assert normalise_title("Cock and Hen., The") == normalise_title("THE COCK AND THE HEN -- JIG")
    assert normalise_title("The Boyne Hunt") != normalise_title("The Flogging Reel")


def test_melodies_group_by_tune_not_key() -> None:
    transposed = [p + 5 for p in TUNE]
    ornamented = [*TUNE[:5], 72, *TUNE[5:12], 64, *TUNE[12:]]
    rng = np.random.default_rng(0)
    other = [int(p) for p in rng.integers(55, 80, size=len(TUNE))]
    assert melody_similarity(TUNE, transposed) == 1.0
    assert melody_similarity(TUNE, ornamented) > 0.8
    assert melody_similarity(TUNE, other) < 0.5
    clusters = cluster_melodies([TUNE, other, transposed, ornamented], 0.6)
    assert sorted(map(sorted, clusters)) == [[0, 2, 3], [1]]


def _works(n: int, source: str) -> list[Work]:
    m = Member("k", "midi", "/x.mid", "t")
    return [Work(f"{source}:{i}", "t", "a", source, "p", (m,)) for i in range(n)]


def test_split_is_disjoint_stratified_and_seeded() -> None:
    works = _works(50, "a") + _works(20, "b")
    split = split_works(works, seed=3, fractions=(0.1, 0.1))
    assert set(split) == {w.work_id for w in works}
    for src, n in (("a", 50), ("b", 20)):
        got = [split[w.work_id] for w in works if w.source == src]
        assert got.count("test") == round(n * 0.1) and got.count("val") == round(n * 0.1)
    assert split_works(works, seed=3, fractions=(0.1, 0.1)) == split
    assert split_works(works, seed=4, fractions=(0.1, 0.1)) != split


def test_budgets_share_works_across_sources() -> None:
    assert budgets(["bach", "essen", "irish"], 7) == {"bach": 3, "essen": 2, "irish": 2}


def test_variation_is_deterministic_and_in_range() -> None:
    members = tuple(Member(f"m{i}", "abc", f"/x#{i}", "t") for i in range(3))
    work = Work("essen:x", "t", "a", "music21:essen-folksong", "p", members)
    kw = {"soundfonts": ["TimGM6mb", "FluidR3_GM"], "n_voices": {m.key: 1 for m in members},
          "backgrounds": [], "max_seconds": 60.0}
    ref = sample_params(work, 0, 1, **kw)
    assert (ref.transpose, ref.tempo, ref.effects, ref.soundfont) == (0, 1.0, {}, "TimGM6mb")
    versions = [sample_params(work, v, 1, **kw) for v in range(1, 200)]
    assert all(-6 <= p.transpose <= 6 and 0.7 <= p.tempo <= 1.4 for p in versions)
    assert len({p.transpose for p in versions}) == 13
    assert {p.member for p in versions} == {m.key for m in members}
    assert any(p.accompaniment != "none" for p in versions) and any(p.drums for p in versions)
    again = sample_params(work, 5, 1, **kw)
    assert params_digest(again) == params_digest(versions[4])
    assert params_digest(sample_params(work, 5, 2, **kw)) != params_digest(again)


def _tune_midi() -> object:
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    inst = pretty_midi.Instrument(program=0)
    for i, p in enumerate(TUNE):
        inst.notes.append(pretty_midi.Note(80, p, i * 0.5, i * 0.5 + 0.45))
    pm.instruments.append(inst)
    return pm


def test_arrange_transposes_stretches_and_accompanies() -> None:
    pm = _tune_midi()
    params = VersionParams(version=1, member="m", kind="midi", seed=1, transpose=-3, tempo=0.8,
                           accompaniment="block", accompaniment_program=0, min_seconds=0.0)
    out = arrange(pm, params, np.random.default_rng(0))
    melody = sorted(out.instruments[0].notes, key=lambda n: n.start)
    assert [n.pitch for n in melody] == [p - 3 for p in TUNE]
    assert melody[-1].start == pytest.approx(0.5 * (len(TUNE) - 1) / 0.8)
    acc = next(i for i in out.instruments if i.name == "accompaniment")
    tonic, major = estimate_key(pm.instruments[0].notes)
    assert (tonic, major) == (7, True)  # the tune is in G major
    # Accompaniment chords are triads of the (transposed) key: G major → E major.
    e_major_scale = {(4 + s) % 12 for s in (0, 2, 4, 5, 7, 9, 11)}
    assert {n.pitch % 12 for n in acc.notes} <= e_major_scale
    assert pm.instruments[0].notes[0].pitch == TUNE[0]  # input untouched


def test_harmonise_picks_covering_triads() -> None:
    pm = pretty_midi.PrettyMIDI()
    notes = [pretty_midi.Note(80, p, i * 0.5, i * 0.5 + 0.5) for i, p in enumerate([60, 64, 67, 64, 65, 69, 72, 69])]
    chords = harmonise(notes, [0.0, 2.0, 4.0], tonic=0, major=True)
    assert sorted(chords[0]) == [0, 4, 7] and sorted(chords[1]) == [0, 5, 9]
    del pm


def test_repeats_short_tunes_to_min_length() -> None:
    params = VersionParams(version=0, member="m", kind="midi", seed=1, min_seconds=30.0)
    out = arrange(_tune_midi(), params, np.random.default_rng(0))
    assert out.get_end_time() >= 30.0
    assert len(out.instruments[0].notes) % len(TUNE) == 0


def test_wad_music_lumps_are_extracted(tmp_path: Path) -> None:
    midi = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 96) + b"MTrk" + struct.pack(">I", 4) + b"\x00\xff\x2f\x00"
    lumps = [(b"D_E1M1", midi), (b"PLAYPAL", b"\x00" * 8), (b"D_MUSLMP", b"MUS\x1a" + b"\x00" * 8)]
    body, table, pos = b"", b"", 12
    for name, data in lumps:
        table += struct.pack("<ii8s", pos, len(data), name)
        body += data
        pos += len(data)
    wad = tmp_path / "test.wad"
    wad.write_bytes(struct.pack("<4sii", b"IWAD", len(lumps), pos) + body + table)
    paths = extract_wad_music(wad, tmp_path / "out")
    assert [p.name for p in paths] == ["test_D_E1M1.mid"]
    assert paths[0].read_bytes() == midi
    pretty_midi.PrettyMIDI(str(paths[0]))  # a valid MIDI file
