"""Symbolic tune families from the music21 corpus: discovery and conversion to MIDI.

Every score member is converted once to a MIDI file (cached) plus its melody's
pitch sequence; discovery groups members into works by title *and* melody.
Parsing runs in worker processes, so the per-member functions are top-level.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from streamcover.files import atomic_path, atomic_write_text
from streamcover.log import get_logger
from streamcover.train.corpus.melody import cluster_melodies, normalise_title
from streamcover.train.corpus.model import Member, Work

log = get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")
MapFn = Callable[[Callable[[T], R], Sequence[T]], Iterable[R]]

# Melody-similarity thresholds (difflib ratio on interval sequences), chosen by
# inspecting known variant groups (Essen's variant file, Bach's re-harmonisations).
BACH_THRESHOLD = 0.75
FOLK_THRESHOLD = 0.55
MAX_MEMBERS = 8
CHORALE_QPM = 76.0
ABC_QPM = 120.0
# Bump when the conversion changes: cached MIDI of older conversions is not reused.
CONVERTER_VERSION = 2

IRISH_COLLECTIONS = {"oneills1850": "O'Neill's 1850", "ryansMammoth": "Ryan's Mammoth", "airdsAirs": "Aird's Airs"}


def music21_corpus_dir() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


@dataclass(frozen=True)
class AbcTune:
    """One tune cut out of an ABC collection file."""

    path: str
    number: int
    titles: tuple[str, ...]
    note: str
    text: str


def split_abc(path: Path) -> list[AbcTune]:
    """Cut an ABC collection into tunes (``X:`` blocks); file-level comments are dropped."""
    text = path.read_text(encoding="latin-1")
    tunes = []
    for block in re.split(r"\n(?=X:)", "\n" + text):
        block = block.strip("\n")
        m = re.match(r"X:\s*(\d+)", block)
        if not m:
            continue
        titles = tuple(t.strip() for t in re.findall(r"^T:\s*(.+)$", block, re.M) if t.strip())
        note = " ".join(re.findall(r"^N:\s*(.+)$", block, re.M))
        if titles:
            tunes.append(AbcTune(str(path), int(m.group(1)), titles, note, block + "\n"))
    return tunes


def abc_tune_text(ref: str) -> str:
    """The text of the tune a ``path#X`` ref names."""
    path, _, number = ref.rpartition("#")
    for tune in split_abc(Path(path)):
        if tune.number == int(number):
            return tune.text
    raise KeyError(f"no tune X:{number} in {path}")


@dataclass(frozen=True)
class Prepared:
    """A score member converted to MIDI, with its melody for grouping."""

    key: str
    midi_path: str
    melody: tuple[int, ...]
    parts: int
    seconds: float


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80]


def prepare_member(args: tuple[Member, str]) -> Prepared | None:
    """Parse a music21/ABC member, write its MIDI and melody to the cache; None if unparsable.

    Cached by member key: a second call only reads the JSON sidecar.
    """
    member, cache_dir = args
    cache = Path(cache_dir) / "symbolic"
    stem = _slug(member.key) + "-" + hashlib.sha1(f"{CONVERTER_VERSION}:{member.key}".encode()).hexdigest()[:8]
    meta_path = cache / f"{stem}.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("failed"):
            return None
        return Prepared(member.key, meta["midi_path"], tuple(meta["melody"]), meta["parts"], meta["seconds"])
    cache.mkdir(parents=True, exist_ok=True)
    try:
        prepared = _convert(member, cache / f"{stem}.mid")
    except Exception as exc:  # music21 raises many types on odd encodings
        log.warning("corpus.member_unparsable", member=member.key, error=str(exc)[:200])
        atomic_write_text(meta_path, json.dumps({"failed": True, "error": str(exc)[:500]}))
        return None
    atomic_write_text(
        meta_path,
        json.dumps(
            {
                "midi_path": prepared.midi_path,
                "melody": list(prepared.melody),
                "parts": prepared.parts,
                "seconds": prepared.seconds,
            }
        ),
    )
    return prepared


def _convert(member: Member, midi_path: Path) -> Prepared:
    from music21 import converter, corpus

    if member.kind == "music21":
        score: Any = corpus.parse(member.ref)
    elif member.kind == "abc":
        score = converter.parse(abc_tune_text(member.ref), format="abc")
    else:
        raise ValueError(f"member {member.key}: kind {member.kind} is not symbolic")
    default_qpm = CHORALE_QPM if member.kind == "music21" else ABC_QPM
    pm = score_to_midi(score, default_qpm)
    parts = [i for i in pm.instruments if i.notes]
    if not parts:
        raise ValueError("no notes")
    melody = [n.pitch for n in sorted(parts[0].notes, key=lambda n: (n.start, -n.pitch))]
    # Chords in the top part: keep the highest note of each onset.
    top: dict[float, int] = {}
    for n in parts[0].notes:
        top[round(n.start, 4)] = max(top.get(round(n.start, 4), 0), n.pitch)
    melody = [top[k] for k in sorted(top)]
    if len(melody) < 8:
        raise ValueError("fewer than 8 melody notes")
    with atomic_path(midi_path) as tmp:
        pm.write(str(tmp))
    return Prepared(member.key, str(midi_path), tuple(melody), len(parts), float(pm.get_end_time()))


def score_to_midi(score: Any, default_qpm: float) -> Any:
    """A music21 score as PrettyMIDI: one instrument per part, tied notes merged.

    Written here rather than through music21's MIDI writer, which expands repeats with
    a quadratic deep copy (seconds per tune); repeats are left as written and short
    tunes are played through again at render time instead, as players do.
    """
    import pretty_midi
    from music21 import tempo

    marks = list(score.recurse().getElementsByClass(tempo.MetronomeMark))
    qpm = default_qpm
    if marks:
        try:
            qpm = float(marks[0].getQuarterBPM() or default_qpm)
        except Exception:
            qpm = default_qpm
    qpm = float(min(max(qpm, 40.0), 220.0))
    sec = 60.0 / qpm
    pm = pretty_midi.PrettyMIDI(initial_tempo=qpm)
    parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
    for part in parts:
        inst = pretty_midi.Instrument(program=0, name=str(part.partName or ""))
        open_ties: dict[int, Any] = {}
        for n in part.flatten().notes:
            ql = float(n.quarterLength)
            if ql <= 0:
                continue  # grace notes
            start = float(n.offset) * sec
            tie = n.tie.type if n.tie is not None else None
            for p in n.pitches:
                midi = int(p.midi)
                if tie in ("stop", "continue") and midi in open_ties:
                    open_ties[midi].end = start + ql * sec * 0.97
                    if tie == "stop":
                        del open_ties[midi]
                    continue
                note = pretty_midi.Note(80, midi, start, start + ql * sec * 0.97)
                inst.notes.append(note)
                if tie == "start":
                    open_ties[midi] = note
        pm.instruments.append(inst)
    return pm


# --- discovery -------------------------------------------------------------------------


def bach_candidates() -> list[Member]:
    """All four-part chorales in music21's Bach corpus."""
    root = music21_corpus_dir() / "bach"
    titles = _chorale_titles()
    members = []
    for path in sorted(root.glob("bwv*")):
        if path.suffix not in (".mxl", ".xml", ".musicxml", ".krn"):
            continue
        name = path.name
        bwv = re.sub(r"^bwv", "", name.rsplit(".", 1)[0])
        title = titles.get(bwv) or titles.get(bwv.split("-")[0]) or f"BWV {bwv}"
        members.append(Member(f"bach/{name}", "music21", f"bach/{name}", title, "bach"))
    return members


def _chorale_titles() -> dict[str, str]:
    try:
        from music21.corpus import chorales

        return {str(k): str(v.get("title", "")) for k, v in chorales.ChoraleList().byBWV.items()}
    except Exception:
        return {}


def group_bach(prepared: Sequence[Prepared], members: dict[str, Member]) -> list[Work]:
    """Works = clusters of chorales whose soprano lines are the same chorale melody.

    Identical harmonisations that appear twice in the corpus are kept once.
    """
    seen: set[str] = set()
    unique = []
    for p in prepared:
        if p.parts < 4:
            continue
        digest = hashlib.sha1(Path(p.midi_path).read_bytes()[22:]).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        unique.append(p)
    clusters = cluster_melodies([p.melody for p in unique], BACH_THRESHOLD)
    works = []
    for cl in clusters:
        if len(cl) < 2:
            continue
        mems = tuple(members[unique[i].key] for i in cl[:MAX_MEMBERS])
        title = _common_title([m.title for m in mems])
        works.append(
            Work(
                work_id=f"bach:{_slug(title).lower()}:{_short(mems[0].key)}",
                title=title,
                artist="J. S. Bach (chorale harmonisations)",
                source="music21:bach-chorales",
                package="music21-corpus-bach",
                members=mems,
            )
        )
    return works


def _short(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:6]


def _common_title(titles: Sequence[str]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for t in titles:
        counts[t] += 1
    return max(counts, key=lambda t: (not t.startswith("BWV "), counts[t], -len(t)))


def essen_candidate_groups() -> list[list[Member]]:
    """Essen tunes sharing a normalised title, plus the explicit variant groups (V0001, V0001A…)."""
    root = music21_corpus_dir() / "essenFolksong"
    groups: dict[str, list[Member]] = defaultdict(list)
    for path in sorted(root.glob("*.abc")):
        if path.stem.startswith("test"):
            continue
        for tune in split_abc(path):
            ref = f"{path}#{tune.number}"
            member = Member(f"essen/{path.stem}/{tune.number}", "abc", ref, tune.titles[0], path.stem)
            m = re.match(r"\s*(V\d+)", tune.note)
            if path.stem == "variant0" and m:
                groups["variant:" + m.group(1)].append(member)
            else:
                key = normalise_title(tune.titles[0])
                if len(key) >= 6:
                    groups["title:" + key].append(member)
    # Explicit variant groups first: they are the surest tune families.
    ordered = sorted(groups.items(), key=lambda kv: (not kv[0].startswith("variant:"), kv[0]))
    return [g for _, g in ordered if len(g) >= 2]


def irish_candidate_groups() -> list[list[Member]]:
    """Tunes whose normalised title appears in more than one of O'Neill's, Ryan's, Aird's."""
    root = music21_corpus_dir()
    index: dict[str, list[Member]] = defaultdict(list)
    for coll in IRISH_COLLECTIONS:
        for path in sorted((root / coll).glob("*.abc")):
            for tune in split_abc(path):
                ref = f"{path}#{tune.number}"
                member = Member(f"{coll}/{path.stem}/{tune.number}", "abc", ref, tune.titles[0], coll)
                for key in {normalise_title(t) for t in tune.titles}:
                    if len(key) >= 5:
                        index[key].append(member)
    groups = []
    for _, mems in sorted(index.items()):
        if len({m.collection for m in mems}) >= 2:
            groups.append(mems[: MAX_MEMBERS + 2])
    return groups


def group_folk(
    group: Sequence[Member],
    prepared: dict[str, Prepared],
    *,
    source: str,
    package: str,
    artist: str,
    min_collections: int = 1,
) -> list[Work]:
    """Split a title group into works by melody; keep clusters of ≥2 members."""
    ok = [m for m in group if m.key in prepared]
    clusters = cluster_melodies([prepared[m.key].melody for m in ok], FOLK_THRESHOLD)
    works = []
    for cl in clusters:
        mems = tuple(ok[i] for i in cl[:MAX_MEMBERS])
        if len(mems) < 2 or len({m.collection for m in mems}) < min_collections:
            continue
        title = _common_title([m.title for m in mems])
        works.append(
            Work(
                work_id=f"{source.split(':')[-1]}:{_slug(normalise_title(title) or title).lower()}:{_short(mems[0].key)}",
                title=title,
                artist=artist,
                source=source,
                package=package,
                members=mems,
            )
        )
    return works


def discover_symbolic(
    sources: Sequence[str],
    cache_dir: Path,
    map_fn: MapFn[tuple[Member, str], Prepared | None],
    max_works: dict[str, int],
) -> list[Work]:
    """Discover the symbolic works of the requested sources (bach, essen, irish).

    ``max_works`` bounds each source so a small build parses only what it needs.
    """
    works: list[Work] = []
    cache = str(cache_dir)
    if "bach" in sources and max_works.get("bach", 0) > 0:
        members = bach_candidates()
        bach_prepared = [p for p in map_fn(prepare_member, [(m, cache) for m in members]) if p]
        bach = group_bach(bach_prepared, {m.key: m for m in members})
        works += bach[: max_works["bach"]]
    folk = [
        ("essen", essen_candidate_groups, "music21:essen-folksong", "music21-corpus-essen",
         "trad. (Essen folk-song collection)", 1),
        ("irish", irish_candidate_groups, "music21:irish-scottish", "music21-corpus-irish",
         "trad. (O'Neill's, Ryan's, Aird's collections)", 2),
    ]
    for name, candidates, source, package, artist, min_coll in folk:
        budget = max_works.get(name, 0)
        if name not in sources or budget <= 0:
            continue
        groups = candidates()
        found: list[Work] = []
        used: set[str] = set()
        batch = min(24, max(2, 2 * budget))
        for start in range(0, len(groups), batch):
            chunk = [[m for m in g if m.key not in used] for g in groups[start : start + batch]]
            todo = list({m.key: m for g in chunk for m in g}.values())
            prepared = {p.key: p for p in map_fn(prepare_member, [(m, cache) for m in todo]) if p}
            for g in chunk:
                for w in group_folk(g, prepared, source=source, package=package, artist=artist,
                                    min_collections=min_coll):
                    if any(m.key in used for m in w.members):
                        continue
                    used.update(m.key for m in w.members)
                    found.append(w)
            if len(found) >= budget:
                break
        works += found[:budget]
    return works
