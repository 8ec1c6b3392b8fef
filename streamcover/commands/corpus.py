"""`streamcover corpus build`: render a versions corpus from registry material (see docs/corpus.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ALL_SOURCES = ("bach", "essen", "irish", "debian-midi", "debian-audio")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("corpus", help="build the versions corpus used for training")
    csub = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    b = csub.add_parser(
        "build",
        help="render several versions of each work, with manifest, split and licences",
        description="Render tune families (music21 corpus, Debian MIDI, Debian recordings) as "
        "cover-like versions under the cache directory. Resumable and deterministic.",
    )
    b.add_argument("--out", type=Path, default=None,
                   help="output directory (default: <cache_dir>/corpus)")
    b.add_argument("--works", type=int, default=None,
                   help="total works, shared evenly across sources (default: all each source offers)")
    b.add_argument("--versions", type=int, default=5, help="versions per work (default 5)")
    b.add_argument("--seed", type=int, default=None, help="seed (default: settings.train.seed)")
    b.add_argument("--sources", nargs="+", choices=ALL_SOURCES, default=list(ALL_SOURCES),
                   help="which sources to use (default: all)")
    b.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    b.add_argument("--max-seconds", type=float, default=120.0,
                   help="longest rendered version in seconds (default 120)")
    b.add_argument("--sample-rate", type=int, default=22_050, help="output sample rate (default 22050)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    from streamcover.cli import CliError
    from streamcover.config import get_settings
    from streamcover.train.corpus.build import BuildOptions, build_corpus

    settings = get_settings()
    if args.versions < 1:
        raise CliError("--versions must be at least 1")
    if args.works is not None and args.works < 1:
        raise CliError("--works must be at least 1")
    out = args.out if args.out is not None else settings.cache_dir / "corpus"
    opts = BuildOptions(
        out=out,
        works=args.works,
        versions=args.versions,
        seed=args.seed if args.seed is not None else settings.train.seed,
        sources=args.sources,
        sample_rate=args.sample_rate,
        max_seconds=args.max_seconds,
        jobs=max(1, args.jobs),
        progress=not args.no_progress,
        debian_dir=settings.cache_dir / "debian",
    )
    try:
        result = build_corpus(opts)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    print(json.dumps({"out": str(result.out), **result.stats}, indent=2))
    return 0 if result.stats["versions"] else 1
