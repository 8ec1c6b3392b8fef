"""`streamcover calibrate --live`: the live (set-list) protocol on real music, and the live
thresholds. Streams are made by :mod:`.live_streams`, run and swept by
:mod:`streamcover.eval.detect_live`; the result is the ``live`` section of the calibration
file (:mod:`.calfile`), every other key of the file kept."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamcover.commands.calibrate.cache import RECIPE, FeatureCache, digest
from streamcover.commands.calibrate.calfile import read_doc, with_live, write_doc
from streamcover.commands.calibrate.catalog import build_catalog
from streamcover.commands.calibrate.data import load_data
from streamcover.commands.calibrate.live_streams import make_live_streams
from streamcover.commands.calibrate.records import read_live_records, write_records
from streamcover.commands.calibrate.report import print_live_report

if TYPE_CHECKING:
    from streamcover.config import AudioSettings, MatchSettings, Settings
    from streamcover.eval.detect_live import LiveCell, LiveResult
    from streamcover.model.inference import Encoder

LIVE_GRID = (0.50, 1.0, 0.005)  # live thresholds swept: from, to, step
CHUNK_GRID = (0.40, 0.45, 0.50, 0.53, 0.56, 0.60, 0.65)
TOP_N = 10  # hits per window, as the monitor's search returns
# docs/results/2026-12-04-live-calibration.md: no false segment from 0.77 on; with speed
# renders the Debian references' impostor scores rose by up to 0.049, and the cover
# references (features only) have none in the calibration catalog.
DEFAULT_LIVE_FLOOR = 0.815


def add_live_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("live (--live)")
    g.add_argument("--live", action="store_true",
                   help="calibrate the live set-list decisions instead of the upload ones")
    g.add_argument("--live-negative-hours", type=float, default=None,
                   help="cap the unrelated music played as live streams (default: all negatives)")
    g.add_argument("--live-stream-hours", type=float, default=1.0,
                   help="length of one negative live stream (recordings back to back)")
    g.add_argument("--live-draws", type=int, default=2, help="set pieces per positive recording")
    g.add_argument("--live-max-recordings", type=int, default=None,
                   help="positive recordings the pieces come from (quick runs; the catalog keeps all)")
    g.add_argument("--live-set-pieces", type=int, default=8, help="pieces per live set")
    g.add_argument("--live-interludes", type=float, default=0.5,
                   help="chance of 20-60 s of uncatalogued music between two pieces")
    g.add_argument("--live-floor", type=float, default=DEFAULT_LIVE_FLOOR,
                   help="lowest live threshold the sweep may pick (default %(default)s: the "
                        "highest false segment, 0.765, plus the margin for the cover "
                        "references' missing speed renders; 0 for none)")


def _scoring(settings: Settings, encoder: Encoder, args: argparse.Namespace) -> dict[str, Any]:
    m = settings.match
    return {"score": "maxmean", "model_id": encoder.model_id,
            "reference_hop_seconds": settings.catalog.reference_hop_seconds,
            "reference_speeds": list(getattr(settings.catalog, "reference_speeds", ())),
            "score_rule": settings.catalog.score_rule, "top_n": TOP_N,
            "window_seconds": settings.audio.window_seconds, "hop_seconds": settings.audio.hop_seconds,
            "horizon_chunks": m.horizon_chunks, "change_margin": m.change_margin,
            "change_patience_chunks": m.change_patience_chunks, "live_min_chunks": m.live_min_chunks,
            "catalog": "silent-chunks-dropped", "frontend": settings.frontend.model_dump()}


def _run(args: argparse.Namespace, settings: Settings, encoder: Encoder, cache_root: Path,
         scoring: dict[str, Any], progress: Any) -> tuple[dict[str, Any], list[LiveResult]]:
    from streamcover.catalog.search import TwoStageSearcher
    from streamcover.eval.detect_live import run_live_stream

    data = load_data(args, progress)
    cat_path = build_catalog(cache_root, encoder, settings, data, progress)
    searcher = TwoStageSearcher.open(cat_path, settings.catalog, model_id=encoder.model_id)
    fe = encoder.frontend
    cache = FeatureCache(cache_root, digest(fe.name, fe.sample_rate, fe.frames_per_second,
                                            getattr(fe, "params", None)))
    results: list[LiveResult] = []
    t_search = time.perf_counter()
    task = progress.add_task("live: search", total=None, note="")
    for stream in make_live_streams(args, encoder, settings, data, cache, progress):
        results.append(run_live_stream(stream, encoder.embed_chunks, searcher, settings.audio,
                                       settings.match, TOP_N))
        progress.advance(task)
    lic = data.licences
    meta = {"protocol": "live", **scoring, "catalog": str(cat_path),
            "run_live_threshold": settings.match.live_threshold,
            "run_chunk_threshold": settings.match.chunk_threshold,
            "seed": args.seed, "negative_recordings": sum(len(r.pieces) for r in results if r.kind == "negative"),
            "positive_recordings": len(data.positives[: args.live_max_recordings]),
            "positive_packages": {p: lic[p] for p in sorted({r.package for r in data.positives})},
            "negative_packages": {p: lic[p] for p in sorted({r.package for r in data.negatives})},
            "catalog_references": len(data.positives) + sum(len(c.ref_ids) for c in data.covers),
            "search_seconds": round(time.perf_counter() - t_search, 1)}
    return meta, results


def _data_doc(meta: dict[str, Any], results: list[LiveResult], args: argparse.Namespace) -> dict[str, Any]:
    from streamcover.eval.detect_live import hours

    sets = [r for r in results if r.kind == "set"]
    pieces = [p for r in sets for p in r.pieces if p.ref is not None]
    lengths = np.array([p.end - p.start for p in pieces]) if pieces else np.zeros(1)
    keep = ("seed", "negative_recordings", "positive_recordings", "positive_packages",
            "negative_packages", "catalog_references", "search_seconds")
    return {**{k: meta[k] for k in keep if k in meta},
            "negative_hours": round(hours(results), 4),
            "negative_streams": sum(r.kind == "negative" for r in results),
            "set_hours": round(hours(results, "set"), 4), "sets": len(sets), "pieces": len(pieces),
            "piece_seconds": {"min": round(float(lengths.min()), 1),
                              "median": round(float(np.median(lengths)), 1),
                              "max": round(float(lengths.max()), 1)},
            "interludes": sum(p.ref is None for r in sets for p in r.pieces),
            "stream_hours": args.live_stream_hours, "draws": args.live_draws,
            "set_pieces": args.live_set_pieces, "interlude_chance": args.live_interludes}


def _run_agreement(results: list[LiveResult], run: MatchSettings, audio: AudioSettings) -> int:
    """Streams where the replay at the run's own settings does not give the run's segments
    (the records must reproduce the monitor's decisions for the sweep to stand for them)."""
    from streamcover.eval.detect_live import replay_live

    bad = 0
    for r in results:
        again = [(d.kind, d.reference_id, round(float(d.score), 4)) for d in replay_live(r, run, audio)
                 if d.kind in ("match", "setlist_segment")]
        bad += again != [(k, ref, round(s, 4)) for k, ref, s, _, _ in r.events]
    return bad


def calibrate_live(args: argparse.Namespace, settings: Settings, encoder: Encoder,
                   model_path: Path, cache_root: Path, progress: Any) -> int:
    """The handler of ``--live`` (module docstring). Returns the exit status: 0 when the
    target is reached on the grid, 1 when not (the sweep is still written)."""
    from streamcover.eval.detect_live import choose, evaluate, hours, live_curve, live_sweep
    from streamcover.match.calibration import default_path

    t0 = time.perf_counter()
    scoring = _scoring(settings, encoder, args)
    key = digest(RECIPE, "live-v1", settings.frontend.model_dump(), scoring, args.seed,
                 args.max_negative_hours, args.live_negative_hours, args.live_stream_hours,
                 args.live_draws, args.live_max_recordings, args.live_set_pieces, args.live_interludes,
                 args.max_positive_recordings)
    records = args.records or cache_root / f"live-records-{encoder.model_id}-{key}.json.gz"
    if records.is_file():
        meta, results = read_live_records(records)
    else:
        meta, results = _run(args, settings, encoder, cache_root, scoring, progress)
        write_records(records, results, meta)
    if hours(results) <= 0:
        from streamcover.cli import CliError

        raise CliError("no negative live streams: cannot measure false alarms")
    lo, hi, step = LIVE_GRID
    lts = [float(x) for x in np.round(np.arange(lo, hi + step / 2, step), 4)]
    t_sweep = time.perf_counter()
    task = progress.add_task("live: sweep", total=len(lts) * len(CHUNK_GRID), note="")
    cells = live_sweep(results, lts, CHUNK_GRID, settings.match, settings.audio,
                       lambda: progress.advance(task))
    sweep_s = time.perf_counter() - t_sweep
    point = choose(cells, args.target, args.live_floor)
    run = settings.match.model_copy(update={"live_threshold": meta["run_live_threshold"],
                                            "chunk_threshold": meta["run_chunk_threshold"]})
    at_run = evaluate(results, run, settings.audio)
    op: dict[str, Any] = {"target_fa_per_hour": args.target, "reached": point is not None}
    op["verified"] = {"streams": len(results),
                      "run_disagreements": _run_agreement(results, run, settings.audio)}
    if point is not None:
        op.update(point.as_dict())
    # The curve at the chosen chunk threshold (the run's, when the target is not reached).
    ct = point.chunk_threshold if point is not None else min(CHUNK_GRID, key=lambda c: abs(c - run.chunk_threshold))
    scores, rates = live_curve(cells, ct)
    curve = {"chunk_threshold": ct, "score": [round(float(s), 5) for s in scores],
             "fa_per_hour": [round(float(r), 6) for r in rates]}
    # The setting outside the sweep, measured the other way: segments opened on a single
    # agreeing chunk too (``match.live_min_chunks`` 1 against the default 2).
    other = 1 if settings.match.live_min_chunks != 1 else 2
    alt = settings.match.model_copy(update={"live_min_chunks": other})
    lever = choose(live_sweep(results, lts, [ct], alt, settings.audio), args.target, args.live_floor)
    levers = {f"live_min_chunks_{other}": {
        "operating_point": None if lever is None else lever.as_dict(),
        "at_run_thresholds": evaluate(results, run.model_copy(update={"live_min_chunks": other}),
                                      settings.audio).as_dict()}}
    live = {"model_id": encoder.model_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "streamcover calibrate --live",
            "data": _data_doc(meta, results, args), "scoring": scoring, "curve": curve,
            "operating_point": op, "at_run_thresholds": at_run.as_dict(), "levers": levers,
            "sweep": [c.as_dict() for c in cells if round(c.live_threshold * 1000) % 10 == 0],
            "sweep_seconds": round(sweep_s, 1)}
    out = args.out or default_path(model_path)
    written = None
    if not args.no_write:
        # Re-read right before writing: another run may have rewritten the upload part.
        write_doc(out, with_live(read_doc(out), live))
        written = out
    print_live_report(live, _table(cells, point), time.perf_counter() - t0, written, records)
    return 0 if point is not None else 1


def _table(cells: list[LiveCell], point: LiveCell | None) -> list[LiveCell]:
    """The report's rows: every 0.05 of live threshold at the chosen chunk threshold (all
    chunk thresholds' best rows when none is chosen), and the point itself."""
    ct = point.chunk_threshold if point is not None else None
    rows = [c for c in cells if (ct is None or abs(c.chunk_threshold - ct) < 1e-9)
            and round(c.live_threshold * 1000) % 50 == 0]
    if point is not None and point not in rows:
        rows.append(point)
    return sorted(rows, key=lambda c: (c.chunk_threshold, c.live_threshold))
