"""`streamcover catalog`: build and maintain the reference catalog.

Examples::

    streamcover catalog add music/*.flac
    streamcover catalog add --manifest refs.csv       # id,path,title,artist,rights_holder,...
    streamcover catalog list
    streamcover catalog stats
    streamcover catalog remove ISRC-123
    streamcover catalog compact                      # drop removed rows, rebuild the index
    streamcover catalog reembed --model models/new.pt
    streamcover catalog reembed                      # same model: new reference hop or features

``add`` is resumable: re-running it after an interruption skips every reference
already stored (by id, and by content hash for files added without an id), so no
reference is stored twice. ``--catalog PATH`` overrides ``settings.catalog.path``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamcover.catalog.store import Catalog
    from streamcover.model.inference import Encoder

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4",
                  ".webm", ".mka", ".mkv", ".aiff", ".aif", ".wma"}
_KNOWN_FIELDS = ("id", "path", "title", "artist", "rights_holder", "duration")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("catalog", help="build and maintain the reference catalog",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", type=Path, default=None,
                   help="catalog directory (default: settings.catalog.path)")
    cs = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)

    a = cs.add_parser("add", help="embed reference recordings and add them (resumable)")
    a.add_argument("paths", nargs="*", type=Path, help="audio files or directories")
    a.add_argument("--manifest", type=Path, help="CSV or JSONL: id, path, title, artist, "
                   "rights_holder and any extra fields")
    a.add_argument("--model", type=Path, default=None,
                   help="encoder checkpoint (default: settings.encoder.model_path)")
    a.add_argument("--batch", type=int, default=32, help="references per durable commit")
    a.add_argument("--no-index", action="store_true", help="do not rebuild the index afterwards")
    a.add_argument("--no-progress", action="store_true")
    a.set_defaults(handler=_add)

    r = cs.add_parser("remove", help="remove references (tombstoned until compaction)")
    r.add_argument("ids", nargs="+")
    r.set_defaults(handler=_remove)

    ls = cs.add_parser("list", help="list references")
    ls.add_argument("--removed", action="store_true", help="include removed references")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.add_argument("--limit", type=int, default=None)
    ls.set_defaults(handler=_list)

    st = cs.add_parser("stats", help="sizes, model id, version, index snapshot")
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=_stats)

    ix = cs.add_parser("index", help="build a new index snapshot and make it current")
    ix.add_argument("--full", action="store_true", help="rebuild instead of extending")
    ix.set_defaults(handler=_index)

    cp = cs.add_parser("compact", help="drop removed rows, merge segments, rebuild the index")
    cp.set_defaults(handler=_compact)

    vf = cs.add_parser("verify", help="check every file's length and checksum")
    vf.set_defaults(handler=_verify)

    re_ = cs.add_parser("reembed", help="rebuild the catalog for another encoder model, "
                        "reference hop or feature store")
    re_.add_argument("--model", type=Path, default=None,
                     help="encoder checkpoint (default: settings.encoder.model_path)")
    re_.add_argument("--force", action="store_true",
                     help="rebuild even when model, reference hop and stored features are current")
    re_.add_argument("--skip-missing", action="store_true",
                     help="drop references whose source audio is gone instead of failing")
    re_.add_argument("--batch", type=int, default=32)
    re_.add_argument("--no-progress", action="store_true")
    re_.set_defaults(handler=_reembed)


# ----------------------------------------------------------------------------- helpers


def catalog_path(args: argparse.Namespace) -> Path:
    from streamcover.config import get_settings

    return Path(args.catalog) if args.catalog is not None else get_settings().catalog.path


def load_encoder(model: Path | None) -> Encoder:
    """The encoder from ``model`` or ``settings.encoder.model_path`` (relative to the project)."""
    from streamcover.cli import CliError
    from streamcover.config import PROJECT_ROOT, get_settings
    from streamcover.model.checkpoint import CheckpointError
    from streamcover.model.inference import Encoder

    s = get_settings()
    path = model or s.encoder.model_path
    if not path.is_absolute() and not path.exists():
        path = PROJECT_ROOT / path
    if not path.exists():
        raise CliError(f"encoder checkpoint {path} not found (pass --model)")
    try:
        return Encoder.from_checkpoint(path, device=s.encoder.device)
    except CheckpointError as exc:
        raise CliError(str(exc)) from exc


def file_sha256(path: Path) -> str:
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
    for p in paths:
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            yield p


def read_manifest(path: Path) -> list[Item]:
    """CSV (header row) or JSONL; ``path`` is required, relative paths resolve to the manifest."""
    from streamcover.catalog.records import check_extra
    from streamcover.cli import CliError
    from streamcover.config import get_settings
    from streamcover.manifests import ManifestError, read_manifest_rows

    max_extra = get_settings().catalog.max_extra_bytes
    try:
        rows = read_manifest_rows(path)
    except ManifestError as exc:
        raise CliError(str(exc)) from exc
    items = []
    for n, row in rows:
        if not row.get("path"):
            raise CliError(f"manifest {path}:{n}: missing 'path'")
        p = Path(str(row["path"]))
        if not p.is_absolute():
            p = path.parent / p
        extra = {k: v for k, v in row.items() if k not in _KNOWN_FIELDS and v not in (None, "")}
        name = f"reference {row['id']!r}" if row.get("id") not in (None, "") else str(p)
        try:
            check_extra(extra, f"manifest {path}:{n}: {name}", max_extra)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        items.append(Item(
            path=p, id=str(row["id"]) if row.get("id") not in (None, "") else None,
            title=row.get("title") or None, artist=row.get("artist") or None,
            rights_holder=row.get("rights_holder") or None, extra=extra,
        ))
    ids = [i.id for i in items if i.id]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise CliError(f"manifest {path}: duplicate ids {sorted(dup)[:5]}")
    return items


def _progress(disabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                    disable=disabled or not sys.stderr.isatty(), transient=False)


@dataclass
class AddSummary:
    added: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def add_items(cat: Catalog, encoder: Encoder, items: list[Item], *, batch: int = 32,
              progress: bool = True) -> AddSummary:
    """Embed and store ``items`` in durable batches, skipping what is already stored."""
    from streamcover.audio.decode import AudioDecodeError
    from streamcover.catalog.errors import ModelMismatchError
    from streamcover.catalog.records import ReferenceInput, check_extra
    from streamcover.config import get_settings

    cat.check_model(encoder.model_id, f"encoder {encoder.model_id!r}")
    cs = get_settings().catalog
    hop = cs.reference_hop_seconds
    summary = AddSummary()
    pending: list[ReferenceInput] = []

    def flush() -> None:
        if pending:
            res = cat.add_references(pending, encoder.model_id, reference_hop_s=hop,
                                     feature_fps=encoder.frontend.frames_per_second,
                                     max_extra_bytes=cs.max_extra_bytes)
            summary.added += len(res.added)
            summary.skipped += len(res.skipped)
            pending.clear()

    with _progress(not progress) as bar:
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
                # One decode and front-end pass gives the embeddings and the stored features.
                emb = encoder.embed(item.path, hop_seconds=hop)
                if len(emb) == 0:
                    raise ValueError(
                        f"{item.path}: shorter than the minimum clip length, nothing to embed"
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


def rebuild_reasons(stats: dict[str, Any], model_id: str | None = None) -> list[str]:
    """Why ``catalog reembed`` would rebuild a catalog with these ``Catalog.stats()``: another
    model, another reference hop than ``catalog.reference_hop_seconds``, or references
    without stored features. Empty when it is current."""
    from streamcover.config import get_settings

    want = get_settings().catalog.reference_hop_seconds
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
        missing = stats["references"] - stats["feature_references"]
        if missing:
            reasons.append(f"{missing} of {stats['references']} reference(s) have no stored "
                           "features (stage-3 alignment needs them)")
    return reasons


# ----------------------------------------------------------------------------- handlers


def _build_index(path: Path, full: bool = False) -> Path | None:
    from streamcover.catalog.factory import IndexParams
    from streamcover.catalog.snapshot import build_snapshot
    from streamcover.catalog.store import Catalog
    from streamcover.config import get_settings

    params = IndexParams.from_settings(get_settings().catalog)
    with Catalog.open(path, "r") as cat:
        if cat.stats()["chunks"] == 0:
            return None
        return build_snapshot(cat, params, incremental=not full)


def _add(args: argparse.Namespace) -> int:
    from streamcover.catalog.errors import CatalogError
    from streamcover.catalog.store import Catalog
    from streamcover.cli import CliError

    items: list[Item] = []
    if args.manifest is not None:
        items.extend(read_manifest(args.manifest))
    items.extend(Item(path=p) for p in iter_paths(args.paths))
    if not items:
        raise CliError("nothing to add: give audio paths or --manifest")
    missing = [str(i.path) for i in items if not i.path.is_file()]
    if missing:
        raise CliError(f"{len(missing)} path(s) not found, e.g. {missing[0]}")
    path = catalog_path(args)
    encoder = load_encoder(args.model)
    t0 = time.perf_counter()
    try:
        with Catalog.open(path, "a", model_id=encoder.model_id) as cat:
            summary = add_items(cat, encoder, items, batch=args.batch,
                                progress=not args.no_progress)
            version = cat.version
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    snap = None if args.no_index else _build_index(path)
    print(f"added {summary.added}, skipped {summary.skipped} (already present), "
          f"failed {len(summary.failed)}; catalog {path} version {version}"
          + (f", index {snap.name}" if snap else "")
          + f" ({time.perf_counter() - t0:.1f}s)")
    return 1 if summary.failed else 0


def _remove(args: argparse.Namespace) -> int:
    from streamcover.catalog.errors import CatalogError
    from streamcover.catalog.store import Catalog
    from streamcover.cli import CliError

    try:
        with Catalog.open(catalog_path(args), "a") as cat:
            for ref_id in args.ids:
                v = cat.remove(ref_id)
                print(f"removed {ref_id} (version {v})")
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from exc
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    return 0


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from streamcover.catalog.errors import CatalogError
    from streamcover.catalog.store import Catalog
    from streamcover.cli import CliError

    try:
        cat = Catalog.open(catalog_path(args), "r")
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    with cat:
        refs = list(cat.references(include_removed=args.removed))[: args.limit]
    if args.json:
        for r in refs:
            print(json.dumps({**r.metadata(), "chunks": r.n_chunks, "added_at": r.added_at,
                              "removed": r.tombstone}))
        return 0
    table = Table(title=f"{len(refs)} reference(s)")
    for col in ("id", "title", "artist", "rights holder", "duration", "chunks", "added"):
        table.add_column(col)
    for r in refs:
        dur = "" if r.duration is None else f"{r.duration:.0f}s"
        table.add_row(r.id + (" (removed)" if r.tombstone else ""), r.title or "", r.artist or "",
                      r.rights_holder or "", dur, str(r.n_chunks), r.added_at)
    Console().print(table)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from streamcover.catalog.errors import CatalogError
    from streamcover.catalog.snapshot import Snapshot, current_snapshot_path
    from streamcover.catalog.store import Catalog
    from streamcover.cli import CliError

    path = catalog_path(args)
    try:
        with Catalog.open(path, "r") as cat:
            stats: dict[str, Any] = cat.stats()
        sp = current_snapshot_path(path)
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    if sp is not None:
        m = Snapshot.load(sp, verify=False).manifest
        size = (sp / "index.faiss").stat().st_size
        stats["snapshot"] = {
            "name": m.name, "store_version": m.store_version, "vectors": m.n_vectors,
            "kind": m.params["kind"], "index_bytes": size,
            "index_bytes_per_chunk": round(size / max(1, m.n_vectors), 1),
            "behind_by_versions": stats["version"] - m.store_version,
        }
    stats["needs_reembed"] = rebuild_reasons(stats)
    if args.json:
        print(json.dumps(stats))
    else:
        for k, v in stats.items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    print(f"{k}.{k2}: {v2}")
            elif k == "needs_reembed":
                print("needs_reembed: " + ("no" if not v else "yes, `streamcover catalog "
                                           "reembed` rebuilds it: " + "; ".join(v)))
            else:
                print(f"{k}: {v}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from streamcover.catalog.errors import CatalogError
    from streamcover.cli import CliError

    try:
        snap = _build_index(catalog_path(args), full=args.full)
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    print("catalog is empty: no index built" if snap is None else f"index snapshot {snap.name}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from streamcover.catalog.errors import CatalogError
    from streamcover.catalog.store import Catalog
    from streamcover.cli import CliError

    path = catalog_path(args)
    try:
        with Catalog.open(path, "a") as cat:
            info = cat.compact()
        snap = _build_index(path, full=True)
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    print(f"compacted {info['segments_before']} segment(s) into {info['segments_after']} "
          f"({info['chunks']} live chunks)" + (f"; index {snap.name}" if snap else ""))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from streamcover.catalog.errors import CatalogError
    from streamcover.catalog.snapshot import Snapshot, current_snapshot_path
    from streamcover.catalog.store import Catalog
    from streamcover.cli import CliError

    path = catalog_path(args)
    try:
        with Catalog.open(path, "r") as cat:
            info = cat.verify()
        sp = current_snapshot_path(path)
        if sp is not None:
            Snapshot.load(sp, verify=True)
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    print(f"ok: {info['segments']} segment(s), {info['rows']} rows"
          + (f", snapshot {sp.name}" if sp else ""))
    return 0


def _reembed(args: argparse.Namespace) -> int:
    """Embed every live reference's source audio with the new model into a sibling
    catalog, then swap directories. Resumable: the sibling keeps what it has."""
    from streamcover.catalog.errors import CatalogError
    from streamcover.catalog.store import Catalog
    from streamcover.cli import CliError
    from streamcover.config import get_settings

    path = catalog_path(args)
    encoder = load_encoder(args.model)
    hop = get_settings().catalog.reference_hop_seconds
    try:
        with Catalog.open(path, "r") as old:
            reasons = rebuild_reasons(old.stats(), encoder.model_id)
            if not reasons and not args.force:
                print(f"catalog {path} is current: model {encoder.model_id}, reference hop "
                      f"{hop:g} s, features stored (--force rebuilds anyway)")
                return 0
            refs = list(old.references())
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    items, missing = [], []
    for r in refs:
        src = Path(r.source_path) if r.source_path else None
        if src is None or not src.is_file():
            missing.append(r.id)
            continue
        items.append(Item(path=src, id=r.id, title=r.title, artist=r.artist,
                          rights_holder=r.rights_holder, extra=r.extra))
    if missing and not args.skip_missing:
        raise CliError(f"{len(missing)} reference(s) have no source audio on disk "
                       f"(e.g. {missing[0]}); pass --skip-missing to drop them")
    # The sibling's name keys what it is built for, so a resumed run continues only its own.
    digest = hashlib.sha256(f"{encoder.model_id}|hop={hop!r}".encode()).hexdigest()[:12]
    new_path = path.with_name(f"{path.name}.reembed-{digest}")
    try:
        with Catalog.open(new_path, "a", model_id=encoder.model_id) as new:
            summary = add_items(new, encoder, items, batch=args.batch,
                                progress=not args.no_progress)
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    if summary.failed:
        raise CliError(f"{len(summary.failed)} reference(s) failed to embed; fix and re-run "
                       f"(progress is kept in {new_path})")
    _build_index(new_path, full=True)
    stamp = time.strftime('%Y%m%dT%H%M%S')
    backup = path.with_name(f"{path.name}.old-{stamp}")
    n = 1
    while backup.exists():  # a second rebuild within the same second
        backup = path.with_name(f"{path.name}.old-{stamp}-{n}")
        n += 1
    os.rename(path, backup)
    os.rename(new_path, path)
    print(f"re-embedded {summary.added + summary.skipped} reference(s) with {encoder.model_id} "
          f"at a {hop:g} s reference hop ({'; '.join(reasons) or 'forced'}); "
          f"old catalog kept at {backup}" + (f"; dropped {len(missing)}" if missing else ""))
    return 0
