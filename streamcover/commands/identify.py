"""`streamcover identify FILE`: which catalogued recordings does this audio contain, and where?

Embeds FILE with the catalog's encoder (20 s chunks, 10 s hop), runs the same search as
the monitor (HNSW top-K per chunk, MaxMean re-ranking, then stage 3: alignment of the
file's features against the leaders, fused into one detection score) and prints the top
matches with scores, the verdict at ``match.threshold`` and, for each query chunk, the
best-matching time in the reference.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("identify", help="find catalogued recordings in an audio file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path)
    p.add_argument("--catalog", type=Path, default=None,
                   help="catalog directory (default: settings.catalog.path)")
    p.add_argument("--model", type=Path, default=None,
                   help="encoder checkpoint (default: settings.encoder.model_path)")
    p.add_argument("--top", type=int, default=5, help="matches to show")
    p.add_argument("--exhaustive", action="store_true",
                   help="score every reference (slow; for checking the two-stage search)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_run)


def _fmt_t(s: float) -> str:
    return f"{int(s // 60)}:{s % 60:04.1f}"


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from streamcover.audio.decode import AudioDecodeError
    from streamcover.catalog.errors import CatalogError
    from streamcover.catalog.search import TwoStageSearcher
    from streamcover.cli import CliError
    from streamcover.commands.common import catalog_path, cli_encoder
    from streamcover.config import get_settings

    if not args.file.is_file():
        raise CliError(f"{args.file} not found")
    settings = get_settings()
    path = catalog_path(args)
    try:
        searcher = TwoStageSearcher.open(path, settings.catalog)
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    encoder = cli_encoder(args.model)
    try:
        emb = encoder.embed(args.file)
    except AudioDecodeError as exc:
        raise CliError(str(exc)) from exc
    if len(emb) == 0:
        raise CliError(f"{args.file} is shorter than {settings.audio.min_clip_seconds} s")
    try:
        hits = searcher.search(emb.vectors, emb.starts, top_n=args.top,
                               model_id=encoder.model_id, exhaustive=args.exhaustive,
                               query_features=emb.features)
    except CatalogError as exc:
        raise CliError(str(exc)) from exc
    window = settings.audio.window_seconds
    threshold = settings.match.threshold
    if args.json:
        print(json.dumps([{
            "reference_id": h.reference_id, "score": round(h.score, 4),
            "maxmean": round(h.maxmean, 4),
            "alignment_score": None if math.isnan(h.align_score) else round(h.align_score, 4),
            "match": rank == 0 and h.score >= threshold, "threshold": threshold,
            "metadata": h.metadata,
            "alignment": [{"query_start_s": a, "ref_start_s": b, "sim": round(c, 4)}
                          for a, b, c in h.alignment],
        } for rank, h in enumerate(hits)]))
        return 0
    table = Table(title=f"{args.file.name}: {len(emb)} chunk(s), catalog version "
                        f"{searcher.view.store_version}")
    for col in ("#", "score", "maxmean", "align", "id", "title", "artist",
                "query → reference (sim)"):
        table.add_column(col, overflow="fold")
    for rank, h in enumerate(hits, 1):
        align = "\n".join(
            f"{_fmt_t(q)}-{_fmt_t(q + window)} → {_fmt_t(r)}-{_fmt_t(r + window)} ({s:.2f})"
            for q, r, s in h.alignment
        )
        table.add_row(str(rank), f"{h.score:.3f}", f"{h.maxmean:.3f}",
                      "" if math.isnan(h.align_score) else f"{h.align_score:.3f}",
                      h.reference_id,
                      str(h.metadata.get("title") or ""), str(h.metadata.get("artist") or ""),
                      align)
    Console().print(table)
    if hits and hits[0].score >= threshold:
        print(f"match: {hits[0].reference_id} (score {hits[0].score:.3f} >= threshold {threshold})")
    else:
        best = f" (best {hits[0].score:.3f})" if hits else ""
        print(f"no match at threshold {threshold}{best}")
    return 0
