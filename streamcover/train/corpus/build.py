"""Building the corpus: discover works, split by work, plan versions, render in a pool.

The four steps of one command, kept together (each is a function; just past ~450 lines).

Layout under ``out``::

    audio/<source>/<work>/vNN-<params hash>.flac   rendered versions (+ .json sidecar each)
    manifest.jsonl   one record per version (work, path, title, artist, source, licence, params …)
    split.json       work ids per split (train/val/test); no work in two splits
    licences.json    every source package with its licence; LICENCES.md the same for people
    stats.json       counts, hours and build time
    _cache/          parsed scores as MIDI, extracted WAD music

Resumable: a version whose audio and sidecar exist is not rendered again; all files
are written atomically. Deterministic: everything random derives from ``seed``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamcover.files import atomic_path, atomic_write_text
from streamcover.log import get_logger
from streamcover.train.corpus import debian, symbolic
from streamcover.train.corpus.model import Member, PackageLicence, VersionParams, Work
from streamcover.train.corpus.variation import params_digest, sample_params

log = get_logger(__name__)

ALL_SOURCES = ("bach", "essen", "irish", "debian-midi", "debian-audio")
SPLITS = ("train", "val", "test")
# Works per source when --works is not given (≈ everything each source offers).
DEFAULT_WORKS = {"bach": 80, "essen": 250, "irish": 150, "debian-midi": 200, "debian-audio": 200}
MIN_RECORDING_SECONDS = 30.0

STATIC_LICENCES = {
    "music21-corpus-bach": PackageLicence(
        "music21-corpus-bach", "PyPI music21 (corpus/bach)",
        "Public domain compositions; encodings distributed with music21 (see music21/corpus/license.txt)",
    ),
    "music21-corpus-essen": PackageLicence(
        "music21-corpus-essen", "PyPI music21 (corpus/essenFolksong)",
        "Essen Folksong Collection: non-commercial distribution and use permitted "
        "(music21/corpus/essenFolksong/license.txt)",
    ),
    "music21-corpus-irish": PackageLicence(
        "music21-corpus-irish", "PyPI music21 (corpus/oneills1850, ryansMammoth, airdsAirs)",
        "Public domain tunes (1778-1883 collections); ABC transcriptions distributed with music21 "
        "(see music21/corpus/license.txt)",
    ),
    "music21": PackageLicence("music21", "PyPI", "BSD-3-Clause", note="score parsing (ABC, MusicXML)"),
    "pretty_midi": PackageLicence(
        "pretty_midi", "PyPI", "MIT (TimGM6mb.sf2 soundfont by Tim Brechbill: GPL-2.0)",
        note="MIDI handling; ships the TimGM6mb soundfont",
    ),
    "tinysoundfont": PackageLicence("tinysoundfont", "PyPI", "MIT", note="soundfont synthesis"),
    "pedalboard": PackageLicence("pedalboard", "PyPI", "GPL-3.0", note="effects, time stretch, audio files"),
}


@dataclass
class BuildOptions:
    """What to build and where; defaults give the full corpus."""

    out: Path
    works: int | None = None
    versions: int = 5
    seed: int = 1234
    sources: Sequence[str] = ALL_SOURCES
    sample_rate: int = 22_050
    max_seconds: float = 120.0
    jobs: int = 2
    progress: bool = True
    split_fractions: tuple[float, float] = (0.1, 0.1)  # val, test
    debian_dir: Path | None = None
    # False: use only Debian packages already unpacked (tests, offline machines).
    fetch: bool = True


@dataclass
class BuildResult:
    """Paths of the written files and the figures of the build."""

    out: Path
    manifest: Path
    split: Path
    licences: Path
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderJob:
    """One version to render (picklable, self-contained)."""

    work: dict[str, Any]
    params: dict[str, Any]
    source_path: str
    out_path: str
    sample_rate: int
    soundfont_path: str
    split: str
    licence: str
    background_licence: str


def _lower_priority() -> None:
    """Pool workers run at nice ≥ 10: the machine is shared with a training job that has priority."""
    try:
        current = os.nice(0)
        if current < 10:
            os.nice(10 - current)
    except OSError:
        pass


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "_", text.lower()).strip("_")[:60]


def budgets(sources: Sequence[str], works: int | None) -> dict[str, int]:
    """Works per source: the defaults, or ``works`` shared evenly across the requested sources."""
    if works is None:
        return {s: DEFAULT_WORKS[s] for s in sources}
    base, extra = divmod(works, len(sources))
    return {s: base + (1 if i < extra else 0) for i, s in enumerate(sources)}


def split_works(works: Sequence[Work], seed: int, fractions: tuple[float, float]) -> dict[str, str]:
    """Work id → split, stratified by source; a seeded hash order, so it is stable and disjoint."""
    by_source: dict[str, list[Work]] = {}
    for w in works:
        by_source.setdefault(w.source, []).append(w)
    out: dict[str, str] = {}
    for _, ws in sorted(by_source.items()):
        ordered = sorted(ws, key=lambda w: hashlib.sha256(f"{seed}:{w.work_id}".encode()).hexdigest())
        n = len(ordered)
        n_test = math.floor(n * fractions[1] + 0.5) if n >= 3 else 0
        n_val = math.floor(n * fractions[0] + 0.5) if n >= 3 else 0
        for i, w in enumerate(ordered):
            out[w.work_id] = "test" if i < n_test else ("val" if i < n_test + n_val else "train")
    return out


def _split_backgrounds(backgrounds: Sequence[Member], seed: int) -> dict[str, list[Member]]:
    """Background recordings are split too (60/20/20), so no recording sounds in two splits."""
    out: dict[str, list[Member]] = {s: [] for s in SPLITS}
    for m in backgrounds:
        h = int(hashlib.sha256(f"bg:{seed}:{m.key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        out["train" if h < 0.6 else ("val" if h < 0.8 else "test")].append(m)
    return out


def _map_with(executor: Executor | None, progress: Any, label: str) -> Callable[..., list[Any]]:
    def run(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        task = progress.add_task(label, total=len(items)) if progress else None
        results = []
        it: Iterable[Any] = executor.map(fn, items, chunksize=2) if executor else map(fn, items)
        for r in it:
            results.append(r)
            if progress:
                progress.advance(task)
        if progress:
            progress.remove_task(task)
        return results

    return run


def discover(
    opts: BuildOptions, cache_dir: Path, debian_dir: Path, run: Callable[..., list[Any]]
) -> tuple[list[Work], list[Member], dict[str, PackageLicence]]:
    """All works of the requested sources, the background pool and the licences used."""
    sources = list(opts.sources)
    unknown = [s for s in sources if s not in ALL_SOURCES]
    if unknown:
        raise ValueError(f"unknown corpus source(s) {unknown}; choose from {list(ALL_SOURCES)}")
    budget = budgets(sources, opts.works)
    licences = {k: STATIC_LICENCES[k] for k in ("music21", "pretty_midi", "tinysoundfont", "pedalboard")}
    needs_synth = any(s != "debian-audio" for s in sources)
    packages: list[str] = list(debian.SOUNDFONT_PACKAGES) if needs_synth else []
    if "debian-midi" in sources:
        packages += list(debian.MIDI_PACKAGES)
    if "debian-audio" in sources or any(s != "debian-audio" for s in sources):
        packages += list(debian.AUDIO_PACKAGES)  # recordings are also the background pool
    for pkg in packages:
        if not opts.fetch and not (debian_dir / pkg / "usr").is_dir():
            continue
        try:
            debian.fetch_package(debian_dir, pkg)
            licences[pkg] = debian.package_licence(debian_dir, pkg)
        except debian.DebianFetchError as exc:
            log.warning("corpus.package_unavailable", package=pkg, error=str(exc))
    works = symbolic.discover_symbolic(
        [s for s in sources if s in ("bach", "essen", "irish")], cache_dir, run,
        {k: v for k, v in budget.items() if k in ("bach", "essen", "irish")},
    )
    for w in works:
        licences.setdefault(w.package, STATIC_LICENCES[w.package])
    if "debian-midi" in sources:
        pkgs = tuple(p for p in debian.MIDI_PACKAGES if p in licences)
        works += _even_take(debian.midi_works(debian_dir, cache_dir, pkgs), budget["debian-midi"], opts.seed)
    audio_pkgs = tuple(p for p in debian.AUDIO_PACKAGES if p in licences)
    recs = [m for m in debian.recordings(debian_dir, audio_pkgs)
            if debian_seconds(m) >= MIN_RECORDING_SECONDS]
    rec_works, backgrounds = debian.recording_works(recs, opts.seed)
    if "debian-audio" in sources:
        works += _even_take(rec_works, budget["debian-audio"], opts.seed)
    return works, backgrounds, licences


def debian_seconds(m: Member) -> float:
    from streamcover.train.corpus.render import recording_seconds

    return recording_seconds(Path(m.ref))


def _even_take(works: list[Work], n: int, seed: int) -> list[Work]:
    ordered = sorted(works, key=lambda w: hashlib.sha256(f"{seed}:{w.work_id}".encode()).hexdigest())
    return ordered[:n]


def _voices(path: str) -> int:
    import pretty_midi

    try:
        pm = pretty_midi.PrettyMIDI(path)
    except Exception:
        return 1
    return sum(1 for i in pm.instruments if not i.is_drum and i.notes)


def plan(
    opts: BuildOptions,
    works: Sequence[Work],
    backgrounds: Sequence[Member],
    licences: dict[str, PackageLicence],
    split: dict[str, str],
    cache_dir: Path,
    debian_dir: Path,
) -> list[RenderJob]:
    """Every version of every work, with its sampled parameters and output path."""
    from streamcover.train.corpus.render import soundfont_paths

    fonts = soundfont_paths(debian_dir)
    font_names = sorted(fonts, key=lambda k: (k != "TimGM6mb", k))
    bg_by_split = _split_backgrounds(backgrounds, opts.seed)
    bg_licence = {m.ref: licences[m.collection].licence for m in backgrounds if m.collection in licences}
    jobs = []
    for w in works:
        sources: dict[str, str] = {}
        n_voices: dict[str, int] = {}
        for m in w.members:
            if m.kind in ("music21", "abc"):
                prepared = symbolic.prepare_member((m, str(cache_dir)))
                if prepared is None:
                    continue
                sources[m.key] = prepared.midi_path
                n_voices[m.key] = prepared.parts
            else:
                sources[m.key] = m.ref
            if m.kind == "midi":
                n_voices[m.key] = _voices(sources[m.key])
        usable = tuple(m for m in w.members if m.key in sources)
        if not usable:
            continue
        work = Work(w.work_id, w.title, w.artist, w.source, w.package, usable, w.role)
        for v in range(opts.versions):
            p = sample_params(
                work, v, opts.seed, soundfonts=font_names, n_voices=n_voices,
                backgrounds=bg_by_split[split[w.work_id]], max_seconds=opts.max_seconds,
            )
            rel = Path("audio") / _slug(w.source) / _slug(w.work_id) / f"v{v:02d}-{params_digest(p)}.flac"
            jobs.append(
                RenderJob(
                    work={k: v for k, v in asdict(work).items() if k != "members"},
                    params=p.to_json(),
                    source_path=sources[p.member],
                    out_path=str(opts.out / rel),
                    sample_rate=opts.sample_rate,
                    soundfont_path=str(fonts.get(p.soundfont, "")),
                    split=split[w.work_id],
                    licence=licences[w.package].licence if w.package in licences else "",
                    background_licence=bg_licence.get(p.background, ""),
                )
            )
    return jobs


def render_job(job: RenderJob) -> dict[str, Any] | None:
    """Render one version (skipped when already there); its manifest record, or None on failure."""
    out = Path(job.out_path)
    sidecar = out.with_suffix(".json")
    if out.exists() and sidecar.exists():
        # Same parameters, same audio; the split and licences come from this build's plan
        # (a different --works can move a work to another split).
        cached: dict[str, Any] = json.loads(sidecar.read_text())
        cached.update(split=job.split, licence=job.licence, background_licence=job.background_licence or None,
                      title=job.work["title"], artist=job.work["artist"])
        return cached
    from streamcover.train.corpus import render
    from streamcover.train.corpus.arrange import arrange

    pdict = dict(job.params)
    pdict["program_map"] = {int(k): v for k, v in pdict["program_map"].items()}
    params = VersionParams(**pdict)
    rng = np.random.default_rng(params.seed)
    sr = job.sample_rate
    t0 = time.perf_counter()
    try:
        if params.kind == "audio":
            src = render.load_recording(
                Path(job.source_path), sr, params.start_offset_s, params.max_seconds * params.tempo
            )
            wave = render.pseudo_version(src, sr, params)
        else:
            import pretty_midi

            pm = arrange(pretty_midi.PrettyMIDI(job.source_path), params, rng)
            wave = render.synthesize(pm, Path(job.soundfont_path), sr)
        if len(wave) < sr or not np.isfinite(wave).all() or float(np.max(np.abs(wave))) < 1e-5:
            raise ValueError("rendered audio is silent, too short or not finite")
        wave = render.apply_effects(wave, sr, params.effects)
        if params.background and params.background_db is not None:
            bg = render.load_background(Path(params.background), sr, params.background_offset_s, len(wave) / sr)
            wave = render.mix_background(wave, bg, params.background_db)
        if params.noise_snr_db is not None:
            wave = render.mix_noise(wave, params.noise_snr_db, rng)
        wave = render.finish(wave, rng)
        render.write_audio(out, wave, sr)
    except Exception as exc:  # one bad source must not stop a long build
        log.warning("corpus.render_failed", work=job.work["work_id"], member=params.member,
                    version=params.version, error=str(exc)[:300])
        return None
    record = {
        "work": job.work["work_id"],
        "path": str(out),
        "title": job.work["title"],
        "artist": job.work["artist"],
        "source": job.work["source"],
        "package": job.work["package"],
        "licence": job.licence,
        "background_licence": job.background_licence or None,
        "split": job.split,
        "version": params.version,
        "member": params.member,
        "duration_s": round(len(wave) / sr, 3),
        "sample_rate": sr,
        "soundfont": params.soundfont or None,
        "render_seconds": round(time.perf_counter() - t0, 3),
        "params": job.params,
    }
    atomic_write_text(sidecar, json.dumps(record, ensure_ascii=False))
    return record


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _manifest_row(record: dict[str, Any], out: Path) -> dict[str, Any]:
    path = Path(record["path"])
    rel = path.relative_to(out) if path.is_relative_to(out) else path
    return {"work": record["work"], "path": str(rel), "title": record["title"], "artist": record["artist"]}


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _licences_md(licences: dict[str, PackageLicence], used: Counter[str]) -> str:
    lines = ["# Licences of the corpus sources", "", "| package | origin | licence | versions | note |",
             "|---|---|---|---|---|"]
    for name, lic in sorted(licences.items()):
        lines.append(f"| {name} | {lic.origin} | {lic.licence} | {used.get(name, 0)} | {lic.note} |")
    return "\n".join(lines) + "\n"


def build_corpus(opts: BuildOptions) -> BuildResult:
    """Discover, split, plan and render; write manifest, split, licences and stats."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    t_start = time.perf_counter()
    out = opts.out.expanduser().resolve()
    opts.out = out
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "_cache"
    debian_dir = (opts.debian_dir or Path.home() / ".cache" / "streamcover" / "debian").expanduser()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), disable=not opts.progress)
    executor = ProcessPoolExecutor(max_workers=opts.jobs, initializer=_lower_priority) if opts.jobs > 1 else None
    try:
        with progress:
            works, backgrounds, licences = discover(
                opts, cache_dir, debian_dir, _map_with(executor, progress, "parsing scores")
            )
            t_discover = time.perf_counter() - t_start
            split = split_works(works, opts.seed, opts.split_fractions)
            jobs = plan(opts, works, backgrounds, licences, split, cache_dir, debian_dir)
            t_render = time.perf_counter()
            records = [r for r in _map_with(executor, progress, "rendering versions")(render_job, jobs) if r]
    finally:
        if executor:
            executor.shutdown()
    records.sort(key=lambda r: (r["work"], r["version"]))
    # manifest*.jsonl: exactly the training manifest format (streamcover.train.manifest
    # rejects unknown columns), paths relative to the corpus folder; versions.jsonl: the
    # same rows with source, licence, split and the version parameters.
    _write_jsonl(out / "versions.jsonl", records)
    manifest = out / "manifest.jsonl"
    _write_jsonl(manifest, [_manifest_row(r, out) for r in records])
    for s in SPLITS:
        _write_jsonl(out / f"manifest-{s}.jsonl", [_manifest_row(r, out) for r in records if r["split"] == s])
    rendered = {r["work"] for r in records}
    split_doc = {s: sorted(w for w, sp in split.items() if sp == s and w in rendered) for s in SPLITS}
    _write_json(out / "split.json", split_doc)
    used = Counter(r["package"] for r in records)
    for r in records:
        if r["soundfont"]:
            used[{"TimGM6mb": "pretty_midi", "FluidR3_GM": "fluid-soundfont-gm",
                  "MuseScore_General": "musescore-general-soundfont"}[r["soundfont"]]] += 1
        if r["params"].get("background"):
            used[Path(r["params"]["background"]).relative_to(debian_dir).parts[0]] += 1
    _write_json(out / "licences.json", [
        {**asdict(lic), "versions_using": used.get(name, 0)} for name, lic in sorted(licences.items())
    ])
    (out / "LICENCES.md").write_text(_licences_md(licences, used))
    seconds = sum(r["duration_s"] for r in records)
    stats = {
        "works": len(rendered),
        "versions": len(records),
        "planned_versions": len(jobs),
        "failed_versions": len(jobs) - len(records),
        "hours": round(seconds / 3600, 3),
        "by_source": {s: {"works": len({r["work"] for r in records if r["source"] == s}),
                          "versions": sum(1 for r in records if r["source"] == s)}
                      for s in sorted({r["source"] for r in records})},
        "by_split": {s: {"works": len(split_doc[s]),
                         "versions": sum(1 for r in records if r["split"] == s)} for s in SPLITS},
        "background_pool": len(backgrounds),
        "seed": opts.seed,
        "sample_rate": opts.sample_rate,
        "discover_seconds": round(t_discover, 1),
        "render_seconds": round(time.perf_counter() - t_render, 1),
        "build_seconds": round(time.perf_counter() - t_start, 1),
        "jobs": opts.jobs,
    }
    _write_json(out / "stats.json", stats)
    log.info("corpus.built", out=str(out), works=stats["works"], versions=stats["versions"],
             hours=stats["hours"], seconds=stats["build_seconds"])
    return BuildResult(out, manifest, out / "split.json", out / "licences.json", stats)
