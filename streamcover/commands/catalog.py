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
The work itself is the library's (``streamcover.catalog.ingest``, ``.store``, ``.snapshot``);
this module parses arguments and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamcover.commands.common import catalog_path, cli_encoder


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


# ----------------------------------------------------------------------------- handlers


@contextlib.contextmanager
def _catalog_errors() -> Iterator[None]:
    """A catalog error inside becomes the user-facing CliError with its message."""
    from streamcover.catalog.errors import CatalogError
    from streamcover.cli import CliError

    try:
        yield
    except CatalogError as exc:
        raise CliError(str(exc)) from exc


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
    from streamcover.catalog.ingest import Item, add_items, iter_paths, read_manifest
    from streamcover.catalog.store import Catalog
    from streamcover.cli import CliError
    from streamcover.manifests import ManifestError

    items: list[Item] = []
    if args.manifest is not None:
        try:
            items.extend(read_manifest(args.manifest))
        except ManifestError as exc:
            raise CliError(str(exc)) from exc
    items.extend(Item(path=p) for p in iter_paths(args.paths))
    if not items:
        raise CliError("nothing to add: give audio paths or --manifest")
    missing = [str(i.path) for i in items if not i.path.is_file()]
    if missing:
        raise CliError(f"{len(missing)} path(s) not found, e.g. {missing[0]}")
    path = catalog_path(args)
    encoder = cli_encoder(args.model)
    t0 = time.perf_counter()
    with _catalog_errors(), Catalog.open(path, "a", model_id=encoder.model_id) as cat:
        summary = add_items(cat, encoder, items, batch=args.batch, progress=not args.no_progress)
        version = cat.version
    snap = None if args.no_index else _build_index(path)
    print(f"added {summary.added}, skipped {summary.skipped} (already present), "
          f"failed {len(summary.failed)}; catalog {path} version {version}"
          + (f", index {snap.name}" if snap else "")
          + f" ({time.perf_counter() - t0:.1f}s)")
    return 1 if summary.failed else 0


def _remove(args: argparse.Namespace) -> int:
    from streamcover.catalog.store import Catalog
    from streamcover.cli import CliError

    with _catalog_errors():
        try:
            with Catalog.open(catalog_path(args), "a") as cat:
                for ref_id in args.ids:
                    v = cat.remove(ref_id)
                    print(f"removed {ref_id} (version {v})")
        except KeyError as exc:
            raise CliError(str(exc.args[0])) from exc
    return 0


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from streamcover.catalog.store import Catalog

    with _catalog_errors():
        cat = Catalog.open(catalog_path(args), "r")
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
    from streamcover.catalog.ingest import rebuild_reasons
    from streamcover.catalog.snapshot import Snapshot, current_snapshot_path
    from streamcover.catalog.store import Catalog

    path = catalog_path(args)
    with _catalog_errors():
        with Catalog.open(path, "r") as cat:
            stats: dict[str, Any] = cat.stats()
        sp = current_snapshot_path(path)
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
    with _catalog_errors():
        snap = _build_index(catalog_path(args), full=args.full)
    print("catalog is empty: no index built" if snap is None else f"index snapshot {snap.name}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from streamcover.catalog.store import Catalog

    path = catalog_path(args)
    with _catalog_errors():
        with Catalog.open(path, "a") as cat:
            info = cat.compact()
        snap = _build_index(path, full=True)
    print(f"compacted {info['segments_before']} segment(s) into {info['segments_after']} "
          f"({info['chunks']} live chunks)" + (f"; index {snap.name}" if snap else ""))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from streamcover.catalog.snapshot import Snapshot, current_snapshot_path
    from streamcover.catalog.store import Catalog

    path = catalog_path(args)
    with _catalog_errors():
        with Catalog.open(path, "r") as cat:
            info = cat.verify()
        sp = current_snapshot_path(path)
        if sp is not None:
            Snapshot.load(sp, verify=True)
    print(f"ok: {info['segments']} segment(s), {info['rows']} rows"
          + (f", snapshot {sp.name}" if sp else ""))
    return 0


def _reembed(args: argparse.Namespace) -> int:
    """Embed every live reference's source audio with the new model into a sibling
    catalog, then swap directories. Resumable: the sibling keeps what it has."""
    from streamcover.catalog.ingest import (
        add_items,
        rebuild_path,
        rebuild_reasons,
        reembed_items,
        speeds_text,
        swap_in,
    )
    from streamcover.catalog.store import Catalog
    from streamcover.cli import CliError
    from streamcover.config import get_settings

    path = catalog_path(args)
    encoder = cli_encoder(args.model)
    hop = get_settings().catalog.reference_hop_seconds
    speeds = tuple(get_settings().catalog.reference_speeds)
    with _catalog_errors(), Catalog.open(path, "r") as old:
        reasons = rebuild_reasons(old.stats(), encoder.model_id)
        if not reasons and not args.force:
            print(f"catalog {path} is current: model {encoder.model_id}, reference hop "
                  f"{hop:g} s, speed renders {speeds_text(speeds)}, features stored "
                  "(--force rebuilds anyway)")
            return 0
        refs = list(old.references())
    items, missing = reembed_items(refs)
    if missing and not args.skip_missing:
        raise CliError(f"{len(missing)} reference(s) have no source audio on disk "
                       f"(e.g. {missing[0]}); pass --skip-missing to drop them")
    new_path = rebuild_path(path, encoder.model_id, hop, speeds)
    with _catalog_errors(), Catalog.open(new_path, "a", model_id=encoder.model_id) as new:
        summary = add_items(new, encoder, items, batch=args.batch, progress=not args.no_progress)
    if summary.failed:
        raise CliError(f"{len(summary.failed)} reference(s) failed to embed; fix and re-run "
                       f"(progress is kept in {new_path})")
    _build_index(new_path, full=True)
    backup = swap_in(path, new_path)
    print(f"re-embedded {summary.added + summary.skipped} reference(s) with {encoder.model_id} "
          f"at a {hop:g} s reference hop, speed renders {speeds_text(speeds)} "
          f"({'; '.join(reasons) or 'forced'}); "
          f"old catalog kept at {backup}" + (f"; dropped {len(missing)}" if missing else ""))
    return 0
