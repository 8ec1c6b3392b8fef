"""Turning audio files into catalog references: manifests, hashing, embedding in batches.

``add_items`` is what ``streamcover catalog add`` / ``reembed`` and ``streamcover calibrate``
run. It is resumable: references already stored (by id, and by content hash for files
added without an id, which get the id ``sha256:<16 hex>``) are skipped, and each batch is
one durable commit, so re-running an interrupted add stores nothing twice.
:func:`rebuild_reasons` says why a catalog no longer matches the settings, and
``reembed_items`` / ``rebuild_path`` / ``swap_in`` are the steps of rebuilding it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamcover.catalog.errors import ModelMismatchError
from streamcover.catalog.records import ReferenceInput, check_extra
from streamcover.manifests import ManifestError, read_manifest_rows
from streamcover.progress import progress_bar

if TYPE_CHECKING:
    import numpy as np

    from streamcover.catalog.records import Reference
    from streamcover.catalog.store import Catalog
    from streamcover.config import CatalogSettings
    from streamcover.model.inference import Embedding, Encoder

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4",
                  ".webm", ".mka", ".mkv", ".aiff", ".aif", ".wma"}
_KNOWN_FIELDS = ("id", "path", "title", "artist", "rights_holder", "duration")


def file_sha256(path: Path) -> str:
    """Content hash of a reference file: what ``add`` recognises a re-added file by."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass
class Item:
    """One reference to add, before embedding."""

    path: Path
    id: str | None = None
    title: str | None = None
    artist: str | None = None
    rights_holder: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def iter_paths(paths: list[Path]) -> Iterator[Path]:
    """The audio files among ``paths``, directories searched recursively by suffix."""
    for p in paths:
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            yield p


def read_manifest(path: Path, max_extra_bytes: int | None = None) -> list[Item]:
    """CSV (header row) or JSONL; ``path`` is required, relative paths resolve to the manifest.

    Every row is checked before anything is embedded (a missing path, ``extra`` over
    ``max_extra_bytes`` (default ``catalog.max_extra_bytes``), duplicate ids), so a bad
    manifest fails in seconds, not after hours of embedding: :class:`ManifestError`.
    """
    from streamcover.config import get_settings

    max_extra = (get_settings().catalog.max_extra_bytes if max_extra_bytes is None
                 else max_extra_bytes)
    rows = read_manifest_rows(path)
    items = []
    for n, row in rows:
        if not row.get("path"):
            raise ManifestError(f"manifest {path}:{n}: missing 'path'")
        p = Path(str(row["path"]))
        if not p.is_absolute():
            p = path.parent / p
        extra = {k: v for k, v in row.items() if k not in _KNOWN_FIELDS and v not in (None, "")}
        name = f"reference {row['id']!r}" if row.get("id") not in (None, "") else str(p)
        try:
            check_extra(extra, f"manifest {path}:{n}: {name}", max_extra)
        except ValueError as exc:
            raise ManifestError(str(exc)) from exc
        items.append(Item(
            path=p, id=str(row["id"]) if row.get("id") not in (None, "") else None,
            title=row.get("title") or None, artist=row.get("artist") or None,
            rights_holder=row.get("rights_holder") or None, extra=extra,
        ))
    ids = [i.id for i in items if i.id]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ManifestError(f"manifest {path}: duplicate ids {sorted(dup)[:5]}")
    return items


def embed_reference_features(encoder: Encoder, feat: np.ndarray, *,
                             hop_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Chunk vectors and start times of a reference's front-end features [bins, T] at
    ``hop_seconds``, without its mostly silent chunks (:func:`~streamcover.audio.chunking.silent_chunks`:
    the silent stretch of any stream would match them exactly)."""
    import numpy as np

    from streamcover.audio.chunking import chunk_features, silent_chunks

    a = encoder.settings.audio
    chunks, starts = chunk_features(feat, encoder.frontend.frames_per_second, a.window_seconds,
                                    hop_seconds, a.min_clip_seconds)
    keep = ~silent_chunks(chunks)
    return encoder.embed_chunks(chunks[keep]), np.asarray(starts, dtype=np.float64)[keep]


def embed_reference(encoder: Encoder, wave: np.ndarray, *, hop_seconds: float,
                    speeds: Iterable[float] = ()) -> Embedding:
    """A reference's chunks: those of the recording at ``hop_seconds``, then those of renders
    played at each of ``speeds`` (``catalog.reference_speeds``), all as one reference;
    mostly silent chunks are left out (:func:`embed_reference_features`).

    A re-upload sped up or slowed down by a few per cent moves its bass notes between the
    front end's frequency bins, which the tuning fold cannot undo; a render at that speed
    matches it again (docs/results/2026-12-04-reference-speeds.md). A render's chunk starts
    are given in the recording's own time (``t * speed``), so set lists and alignments
    stay in reference time. ``features`` are the recording's alone: stage 3 aligns against
    them."""
    import numpy as np

    from streamcover.audio.speed import change_speed
    from streamcover.model.inference import Embedding

    fe = encoder.frontend
    feat = fe.features(wave)
    base_vectors, base_starts = embed_reference_features(encoder, feat, hop_seconds=hop_seconds)
    vectors, starts = [base_vectors], [base_starts]
    for speed in speeds:
        v, s = embed_reference_features(encoder, fe.features(change_speed(wave, speed)),
                                        hop_seconds=hop_seconds)
        vectors.append(v)
        starts.append(s * speed)
    return Embedding(np.concatenate(vectors), np.concatenate(starts),
                     duration_s=len(wave) / fe.sample_rate, features=feat)


@dataclass
class AddSummary:
    added: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def add_items(cat: Catalog, encoder: Encoder, items: list[Item], *, batch: int = 32,
              progress: bool = True) -> AddSummary:
    """Embed and store ``items`` in durable batches, skipping what is already stored."""
    from streamcover.audio.decode import AudioDecodeError, load_audio
    from streamcover.config import get_settings

    cat.check_model(encoder.model_id, f"encoder {encoder.model_id!r}")
    cs = get_settings().catalog
    hop = cs.reference_hop_seconds
    speeds = tuple(cs.reference_speeds)
    cat.check_reference_grid(hop, speeds)  # a mismatch fails before anything is decoded
    summary = AddSummary()
    pending: list[ReferenceInput] = []

    def flush() -> None:
        if pending:
            res = cat.add_references(pending, encoder.model_id, reference_hop_s=hop,
                                     reference_speeds=speeds,
                                     feature_fps=encoder.frontend.frames_per_second,
                                     max_extra_bytes=cs.max_extra_bytes)
            summary.added += len(res.added)
            summary.skipped += len(res.skipped)
            pending.clear()

    with progress_bar(not progress) as bar:
        task = bar.add_task("embedding", total=len(items), note="")
        for item in items:
            bar.update(task, note=item.path.name[:40])
            try:
                if item.id is not None and cat.has_reference(item.id):
                    summary.skipped += 1
                    continue
                digest = file_sha256(item.path)
                ref_id = item.id or f"sha256:{digest[:16]}"
                same = cat.find_by_hash(digest)
                if same is not None or ref_id in {p.id for p in pending}:
                    summary.skipped += 1
                    continue
                check_extra(item.extra, f"{ref_id} ({item.path})", cs.max_extra_bytes)
                # One decode gives the embeddings, the speed renders and the stored features.
                wave = load_audio(item.path, encoder.frontend.sample_rate)
                emb = embed_reference(encoder, wave, hop_seconds=hop, speeds=speeds)
                if len(emb) == 0:
                    raise ValueError(
                        f"{item.path}: shorter than the minimum clip length or silent, "
                        "nothing to embed"
                    )
                pending.append(ReferenceInput(
                    id=ref_id, vectors=emb.vectors, starts=emb.starts,
                    title=item.title or item.path.stem, artist=item.artist,
                    rights_holder=item.rights_holder, duration=float(emb.duration_s),
                    extra=item.extra, content_hash=digest, source_path=str(item.path.resolve()),
                    features=emb.features,
                ))
            except (AudioDecodeError, OSError, ValueError) as exc:
                summary.failed.append((str(item.path), str(exc)))
                print(f"streamcover catalog add: skipping {item.path}: {exc}", file=sys.stderr)
            except ModelMismatchError:
                raise
            finally:
                bar.advance(task)
            if len(pending) >= batch:
                flush()
        flush()
    return summary


def rebuild_reasons(stats: dict[str, Any], model_id: str | None = None,
                    settings: CatalogSettings | None = None) -> list[str]:
    """Why ``catalog reembed`` would rebuild a catalog with these ``Catalog.stats()``: another
    model, another reference hop than ``catalog.reference_hop_seconds``, other speed renders
    than ``catalog.reference_speeds``, or references without stored features (``settings``:
    default the process's). Empty when it is current."""
    from streamcover.config import get_settings

    cs = settings if settings is not None else get_settings().catalog
    want = cs.reference_hop_seconds
    want_speeds = tuple(cs.reference_speeds)
    reasons = []
    if model_id is not None and stats["model_id"] not in (None, model_id):
        reasons.append(f"built with model {stats['model_id']}, not {model_id}")
    if stats["references"]:
        hop = stats["reference_hop_seconds"]
        if hop is None:
            reasons.append("reference hop unrecorded (built before catalog.reference_hop_seconds, "
                           f"on the 10 s query grid); settings ask for {want:g} s")
        elif abs(hop - want) > 1e-9:
            reasons.append(f"references at a {hop:g} s hop; settings ask for {want:g} s")
        have_speeds = tuple(stats.get("reference_speeds") or ())
        if have_speeds != want_speeds:
            reasons.append(f"references rendered at speeds {speeds_text(have_speeds)}; settings ask "
                           f"for {speeds_text(want_speeds)}")
        missing = stats["references"] - stats["feature_references"]
        if missing:
            reasons.append(f"{missing} of {stats['references']} reference(s) have no stored "
                           "features (stage-3 alignment needs them)")
    return reasons


def reembed_items(refs: Iterable[Reference]) -> tuple[list[Item], list[str]]:
    """What a rebuild re-embeds: an item per reference whose source audio is still on disk
    (id and metadata kept), and the ids of those whose audio is gone."""
    items, missing = [], []
    for r in refs:
        src = Path(r.source_path) if r.source_path else None
        if src is None or not src.is_file():
            missing.append(r.id)
            continue
        items.append(Item(path=src, id=r.id, title=r.title, artist=r.artist,
                          rights_holder=r.rights_holder, extra=r.extra))
    return items, missing


def speeds_text(speeds: Iterable[float]) -> str:
    """``catalog.reference_speeds`` for a message: ``0.94, 1.06`` or ``none``."""
    return ", ".join(f"{s:g}" for s in speeds) or "none"


def rebuild_path(path: Path, model_id: str, hop_s: float, speeds: Iterable[float] = ()) -> Path:
    """The sibling directory a rebuild for ``model_id`` at ``hop_s`` and ``speeds`` is built
    in. Its name keys what it is built for, so a resumed run continues only its own."""
    key = f"{model_id}|hop={hop_s!r}"
    if tuple(speeds):
        key += f"|speeds={tuple(float(s) for s in speeds)!r}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return path.with_name(f"{path.name}.reembed-{digest}")


def swap_in(path: Path, new_path: Path) -> Path:
    """Rename the rebuilt catalog ``new_path`` over ``path``, keeping the old one as
    ``<name>.old-<time>`` (returned), so a bad rebuild can be put back by hand."""
    stamp = time.strftime('%Y%m%dT%H%M%S')
    backup = path.with_name(f"{path.name}.old-{stamp}")
    n = 1
    while backup.exists():  # a second rebuild within the same second
        backup = path.with_name(f"{path.name}.old-{stamp}-{n}")
        n += 1
    os.rename(path, backup)
    os.rename(new_path, path)
    return backup
