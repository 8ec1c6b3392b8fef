"""`streamcover calibrate`: the open-set detection protocol on real audio, and the threshold.

    streamcover calibrate                       # everything: data, catalog, streams, sweep, files
    streamcover calibrate --records runs.json.gz --no-write   # re-sweep recorded streams only

Builds (once, cached under ``~/.cache/streamcover/calibration``) a catalog of the positive
Debian packages' recordings plus one version of every SHS held-out and custom-set work,
runs re-uploads, real covers and unrelated music (other Debian packages) through the
monitor's search and upload decisions (``streamcover.eval.detect``), and writes:

* ``--out`` (default ``models/<model>.calibration.json``): the score -> false alarms per
  stream-hour curve, the operating point, recall per class, the data and the model id;
* ``--plot`` (default ``models/<model>-det.png``): the DET curves;
* ``--records``: every stream's per-window scores, so a later sweep needs no search.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streamcover.config import Settings
    from streamcover.eval.detect import QueryStream, StreamResult, Sweep
    from streamcover.eval.detect_data import CoverSet, Recording
    from streamcover.model.inference import Encoder

RECIPE = "detect-v1"  # bump when the way streams are made changes (invalidates the feature cache)
TARGET_FA_PER_HOUR = 0.1
RELEASE_RATIO = 0.8  # release / threshold, as the shipped defaults (0.56 / 0.70)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("calibrate", help="measure false alarms/h and recall on real audio; set the threshold",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="encoder checkpoint (default: settings)")
    p.add_argument("--cache", type=Path, default=None,
                   help="cache directory (default: ~/.cache/streamcover/calibration)")
    p.add_argument("--out", type=Path, default=None, help="calibration JSON (default: next to the model)")
    p.add_argument("--plot", type=Path, default=None, help="DET plot PNG (default: next to the model)")
    p.add_argument("--records", type=Path, default=None,
                   help="per-stream window records (.json.gz); read instead of searching if it exists")
    p.add_argument("--shs", type=Path, default=Path("/work/shared/data/shs100k_test_hpcp_u8.npz"))
    p.add_argument("--split", type=Path, default=None, help="SHS split (default: ops/train/shs100k-test-split.json)")
    p.add_argument("--custom", type=Path, default=Path("/work/shared/data/custom_hpcp_u8.npz"))
    p.add_argument("--target", type=float, default=TARGET_FA_PER_HOUR, help="false alarms per stream-hour")
    p.add_argument("--draws", type=int, default=3, help="re-uploads per recording and short length")
    p.add_argument("--max-negative-hours", type=float, default=None, help="cap the negative audio")
    p.add_argument("--max-covers", type=int, default=None, help="cap cover queries per set (quick runs)")
    p.add_argument("--max-positive-recordings", type=int, default=None, help="quick runs")
    p.add_argument("--seed", type=int, default=20261203)
    p.add_argument("--no-write", action="store_true", help="print the figures, write no calibration/plot")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_calibrate)


# ----------------------------------------------------------------------------- helpers


def _progress(disabled: bool) -> Any:
    from streamcover.progress import progress_bar as catalog_progress

    return catalog_progress(disabled)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FeatureCache:
    """Front-end features of query streams, by a key of everything that made them."""

    def __init__(self, root: Path, frontend_key: str) -> None:
        self.root = root / "features"
        self.root.mkdir(parents=True, exist_ok=True)
        self.frontend_key = frontend_key

    def get(self, key: Sequence[Any], make: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.root / f"{_digest(RECIPE, self.frontend_key, *key)}.npy"
        if path.is_file():
            try:
                return np.load(path).astype(np.float32)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        feat = make()
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, feat.astype(np.float16))
        tmp.replace(path)
        return feat.astype(np.float16).astype(np.float32)


@dataclasses.dataclass
class Data:
    positives: list[Recording]
    negatives: list[Recording]
    covers: list[CoverSet]
    licences: dict[str, str]


def load_data(args: argparse.Namespace, progress: Any) -> Data:
    from streamcover.config import PROJECT_ROOT
    from streamcover.eval.detect_data import (
        NEGATIVE_PACKAGES,
        POSITIVE_PACKAGES,
        cover_set,
        fetch_package,
        package_licence,
        package_recordings,
    )
    from streamcover.train.shs import read_split

    licences: dict[str, str] = {}
    recs: dict[str, list[Recording]] = {"pos": [], "neg": []}
    specs = [("pos", s) for s in POSITIVE_PACKAGES] + [("neg", s) for s in NEGATIVE_PACKAGES]
    task = progress.add_task("packages", total=len(specs), note="")
    for side, spec in specs:
        root = fetch_package(spec.name)
        licences[spec.name] = package_licence(spec.name, root)
        recs[side].extend(package_recordings(spec, root))
        progress.advance(task)
    pos = recs["pos"][: args.max_positive_recordings]
    neg = recs["neg"]
    if args.max_negative_hours is not None:
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(len(neg))
        kept, total = [], 0.0
        for i in order:
            if total >= args.max_negative_hours * 3600:
                break
            kept.append(neg[i])
            total += neg[i].duration_s
        neg = sorted(kept, key=lambda r: str(r.path))
    split = read_split(args.split or PROJECT_ROOT / "ops" / "train" / "shs100k-test-split.json")
    covers = [cover_set("shs", args.shs, works=split["test"]), cover_set("custom", args.custom)]
    return Data(pos, neg, covers, licences)


def build_catalog(root: Path, encoder: Encoder, settings: Settings, data: Data, progress: Any) -> Path:
    """The calibration catalog, through the public store and index functions (as ``catalog
    add`` does), cached by everything that shapes it."""
    from streamcover.audio.decode import load_audio
    from streamcover.catalog import store
    from streamcover.catalog.factory import IndexParams
    from streamcover.catalog.snapshot import build_snapshot

    cs = settings.catalog
    hop = getattr(cs, "reference_hop_seconds", None)
    params = IndexParams.from_settings(cs)
    refs = [(r.ref_id, r.sha256) for r in data.positives] + [
        (rid, c.name) for c in data.covers for rid in c.ref_ids]
    key = _digest(RECIPE, encoder.model_id, getattr(encoder.frontend, "params", None), hop,
                  store.SCHEMA_VERSION,
                  getattr(store, "FEATURE_FORMAT", None), params.build_key(),
                  settings.audio.window_seconds, settings.audio.min_clip_seconds, refs)
    path = root / f"catalog-{key}"
    if (path / ".complete").is_file():
        return path
    add_kw = set(inspect.signature(store.Catalog.add_references).parameters)
    has_feats = "features" in {f.name for f in dataclasses.fields(store.ReferenceInput)}
    embed_kw: dict[str, Any] = {}
    if "hop_seconds" in inspect.signature(encoder.embed_features).parameters and hop is not None:
        embed_kw["hop_seconds"] = hop
    fe = encoder.frontend
    batch: list[store.ReferenceInput] = []

    def flush(cat: store.Catalog, fps: float) -> None:
        kw: dict[str, Any] = {}
        if "reference_hop_s" in add_kw:
            kw["reference_hop_s"] = hop
        if "feature_fps" in add_kw and has_feats:
            kw["feature_fps"] = fps
        if batch:
            cat.add_references(batch, encoder.model_id, **kw)
            batch.clear()

    def ref(rid: str, feat: np.ndarray, **meta: Any) -> store.ReferenceInput:
        emb = encoder.embed_features(feat, **embed_kw)
        extra: dict[str, Any] = {"features": feat} if has_feats else {}
        return store.ReferenceInput(id=rid, vectors=emb.vectors, starts=emb.starts,
                                    duration=float(emb.duration_s), **meta, **extra)

    import shutil

    shutil.rmtree(path, ignore_errors=True)
    with store.Catalog.open(path, "w", model_id=encoder.model_id) as cat:
        task = progress.add_task("catalog: debian", total=len(data.positives), note="")
        for r in data.positives:
            feat = np.asarray(fe.features(load_audio(r.path, fe.sample_rate)), np.float32)
            batch.append(ref(r.ref_id, feat, title=r.path.stem, artist=r.package,
                             content_hash=r.sha256, source_path=str(r.path)))
            if len(batch) >= 32:
                flush(cat, float(fe.frames_per_second))
            progress.advance(task)
        flush(cat, float(fe.frames_per_second))
        for c in data.covers:
            task = progress.add_task(f"catalog: {c.name}", total=len(c.ref_ids), note="")
            for rid, feat in zip(c.ref_ids, c.ref_features, strict=True):
                batch.append(ref(rid, feat, title=rid, artist=c.name))
                if len(batch) >= 128:
                    flush(cat, float(fe.frames_per_second))
                progress.advance(task)
            flush(cat, float(fe.frames_per_second))
        build_snapshot(cat, params, incremental=False)
    (path / ".complete").write_text(key + "\n")
    return path


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha256(name.encode()).hexdigest()[:15], 16)])


class _LazyAudio:
    """A recording decoded at most once, on first use (cached streams need no decode)."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path, self.rate = path, rate
        self._wave: np.ndarray | None = None

    def wave(self) -> np.ndarray:
        if self._wave is None:
            from streamcover.audio.decode import load_audio

            self._wave = load_audio(self.path, self.rate)
        return self._wave


@dataclasses.dataclass
class _ReuploadFeatures:
    source: _LazyAudio
    spec: Any
    wire: int
    frontend: Any

    def __call__(self) -> np.ndarray:
        from streamcover.eval.detect_data import make_reupload, monitor_features

        up = make_reupload(self.source.wave(), self.source.rate, self.spec, self.wire)
        return monitor_features(up, self.wire, self.frontend)


@dataclasses.dataclass
class _NegativeFeatures:
    path: Path
    wire: int
    frontend: Any

    def __call__(self) -> np.ndarray:
        from streamcover.audio.decode import load_audio
        from streamcover.eval.detect_data import monitor_features

        return monitor_features(load_audio(self.path, self.wire), self.wire, self.frontend)


def make_streams(args: argparse.Namespace, encoder: Encoder, settings: Settings, data: Data,
                 cache: FeatureCache, progress: Any) -> Iterator[QueryStream]:
    """Every query stream: re-uploads, covers, negatives (features cached)."""
    from streamcover.eval.detect import QueryStream
    from streamcover.eval.detect_data import draw_reupload, excerpt

    fe = encoder.frontend
    fps = float(fe.frames_per_second)
    wire = settings.audio.wire_sample_rate
    rate = int(fe.sample_rate)
    # Re-uploads of the catalogued Debian recordings.
    task = progress.add_task("re-uploads", total=len(data.positives), note="")
    for r in data.positives:
        rng = _rng(args.seed, r.sha256)  # per recording: stable draws as the data set changes
        plans = [(str(int(L)), draw_reupload(rng, r.duration_s, L)) for L in (10.0, 30.0, 60.0)
                 for _ in range(args.draws)] + [("full", draw_reupload(rng, r.duration_s, None))]
        source = _LazyAudio(r.path, rate)
        for i, (length, spec) in enumerate(plans):
            feat = cache.get(["reupload", r.sha256, spec.key(), wire],
                             _ReuploadFeatures(source, spec, wire, fe))
            yield QueryStream(f"{r.ref_id}#{length}-{i}", "reupload", "debian", length, r.ref_id, feat, fps)
        progress.advance(task)
    # Real covers: the other versions of catalogued works, a random 60 s and full length.
    for c in data.covers:
        n = len(c.query_ids) if args.max_covers is None else min(args.max_covers, len(c.query_ids))
        task = progress.add_task(f"covers: {c.name}", total=n, note="")
        for qid, ref, feat in list(zip(c.query_ids, c.query_refs, c.query_features, strict=True))[:n]:
            cut = excerpt(feat, 60.0, c.frames_per_second, _rng(args.seed, qid))
            yield QueryStream(f"{qid}#60", "cover", c.name, "60", ref, cut, c.frames_per_second)
            yield QueryStream(f"{qid}#full", "cover", c.name, "full", ref, feat, c.frames_per_second)
            progress.advance(task)
    # Unrelated music: whole recordings of other packages, through the wire-rate path.
    task = progress.add_task("negatives", total=len(data.negatives), note="")
    for r in data.negatives:
        feat = cache.get(["negative", r.sha256, wire], _NegativeFeatures(r.path, wire, fe))
        yield QueryStream(f"{r.ref_id}#full", "negative", r.package, "full", None, feat, fps)
        progress.advance(task)


def write_records(path: Path, results: Sequence[StreamResult], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        json.dump({"meta": meta, "streams": [r.to_json() for r in results]}, fh)
    tmp.replace(path)


def read_records(path: Path) -> tuple[dict[str, Any], list[StreamResult]]:
    from streamcover.eval.detect import StreamResult

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    return doc["meta"], [StreamResult.from_json(d) for d in doc["streams"]]


def plot_det(path: Path, sw: Sweep, op_index: int | None, title: str) -> None:
    """Miss rate against false alarms per stream-hour, one curve per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    fa = np.maximum(sw.fa_per_hour, 0.5 / sw.negative_hours)  # zero counts drawn at half the floor
    for cls in sorted(c for c in sw.recall if not c.startswith("cover-")):
        ax.plot(fa, 1.0 - sw.recall[cls], label=f"{cls} (n={sw.positives[cls]})")
    ax.axvline(TARGET_FA_PER_HOUR, color="grey", ls=":", lw=1)
    ax.axvline(1.0 / sw.negative_hours, color="grey", ls="--", lw=1,
               label=f"floor: 1 per {sw.negative_hours:.1f} h")
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per stream-hour (unrelated real music)")
    ax.set_ylabel("miss rate")
    ax.set_ylim(0, 1.02)
    where = ("not reached" if op_index is None else f"threshold {sw.thresholds[op_index]:.3f}")
    ax.set_title(f"{title}\noperating point ({TARGET_FA_PER_HOUR}/h): {where}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- handler


def _calibrate(args: argparse.Namespace) -> int:
    import torch

    from streamcover.cli import CliError
    from streamcover.commands.common import cli_encoder
    from streamcover.config import PROJECT_ROOT, default_cache_dir, get_settings
    from streamcover.eval.detect import TwoPoint, run_stream, sweep, two_point, verify
    from streamcover.eval.detect_data import DataError
    from streamcover.match.calibration import CALIBRATION_FORMAT, curve_points, default_path
    from streamcover.match.fusion import DEFAULT_PARAMS

    t0 = time.perf_counter()
    settings = get_settings()
    torch.set_num_threads(max(1, settings.monitor.torch_threads or 1))
    model_path = args.model or settings.encoder.model_path
    if not model_path.is_absolute() and not model_path.exists():
        model_path = PROJECT_ROOT / model_path
    encoder = cli_encoder(model_path)
    cache_root = args.cache or default_cache_dir() / "calibration"
    # Recorded hits depend on everything that scores a window: key the default file on it.
    scoring = _digest(encoder.model_id, settings.catalog.reference_hop_seconds,
                      settings.verify.model_dump(), DEFAULT_PARAMS.as_dict(), settings.audio.hop_seconds,
                      settings.audio.window_seconds, settings.catalog.score_rule)
    records = args.records or cache_root / f"records-{encoder.model_id}-{scoring}.json.gz"
    meta: dict[str, Any]
    with _progress(args.no_progress) as progress:
        if args.records is not None and args.records.is_file():
            meta, results = read_records(args.records)
        else:
            from streamcover.catalog.search import TwoStageSearcher

            try:
                data = load_data(args, progress)
            except (DataError, FileNotFoundError, ValueError) as exc:
                raise CliError(str(exc)) from exc
            cat_path = build_catalog(cache_root, encoder, settings, data, progress)
            searcher = TwoStageSearcher.open(cat_path, settings.catalog, model_id=encoder.model_id)
            fe = encoder.frontend
            cache = FeatureCache(cache_root, _digest(fe.name, fe.sample_rate, fe.frames_per_second,
                                                     getattr(fe, "params", None)))
            results = []
            t_search = time.perf_counter()
            for stream in make_streams(args, encoder, settings, data, cache, progress):
                results.append(run_stream(stream, encoder.embed_chunks, searcher, settings.audio,
                                          settings.match))
            meta = {
                "model_id": encoder.model_id, "catalog": str(cat_path),
                "reference_hop_seconds": getattr(settings.catalog, "reference_hop_seconds", None),
                "stage3": "query_features" in inspect.signature(searcher.search).parameters,
                "score_rule": settings.catalog.score_rule,
                "window_seconds": settings.audio.window_seconds, "hop_seconds": settings.audio.hop_seconds,
                "run_threshold": settings.match.threshold, "run_release_threshold": settings.match.release_threshold,
                "positive_packages": {p: data.licences[p] for p in sorted({r.package for r in data.positives})},
                "negative_packages": {p: data.licences[p] for p in sorted({r.package for r in data.negatives})},
                "catalog_references": len(data.positives) + sum(len(c.ref_ids) for c in data.covers),
                "positive_recordings": len(data.positives), "negative_recordings": len(data.negatives),
                "cover_sets": {c.name: {"works": len(c.ref_ids), "queries": len(c.query_ids)}
                               for c in data.covers},
                "search_seconds": round(time.perf_counter() - t_search, 1),
            }
            write_records(records, results, meta)
    thresholds = np.round(np.arange(0.20, 1.0001, 0.005), 4)
    sw = sweep(results, thresholds, settings.match.min_chunks)
    if sw.negative_streams == 0:
        raise CliError("no negative streams: cannot measure false alarms")
    try:
        point: TwoPoint | None = two_point(results, thresholds, args.target)
    except ValueError:
        point = None  # reported as not reached; the curves are still written
    op = None if point is None else int(np.searchsorted(sw.thresholds, point.many - 1e-9))
    op_doc: dict[str, Any] = {"target_fa_per_hour": args.target, "reached": point is not None}
    if point is not None:
        release = round(RELEASE_RATIO * min(point.many, point.one_chunk), 4)
        chosen = settings.match.model_copy(update={
            "threshold": point.many, "one_chunk_threshold": point.one_chunk,
            "release_threshold": release})
        ver = verify(results, chosen, settings.audio)
        op_doc.update({"threshold": point.many, "one_chunk_threshold": point.one_chunk,
                       "release_threshold": release, "false_alarms": point.false_alarms,
                       "fa_per_hour": round(point.fa_per_hour, 4),
                       "wrong_reference_events": point.wrong_reference_events,
                       "recall": {c: round(v, 4) for c, v in point.recall.items()},
                       "verified": {"false_alarm_events": ver.false_alarm_events,
                                    "negative_streams_with_events": ver.negative_streams_with_events,
                                    "detected": ver.detected,
                                    "wrong_reference_events": ver.wrong_reference_events,
                                    "disagreements": len(ver.disagreements)}})
    at_run = _run_figures(results, settings.match.threshold)
    # The confidence curves: negatives' best scores over queries of two chunks or more, and
    # over one-chunk queries (events say which applies by their chunks_used).
    neg = [r for r in results if r.kind == "negative"]
    scores, rates = curve_points([r.best_false(2) for r in neg], sw.negative_hours)
    scores1, rates1 = curve_points([r.best_false(1, 1) for r in neg], sw.negative_hours)
    doc = {
        "format": CALIBRATION_FORMAT,
        "model_id": meta["model_id"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "streamcover calibrate",
        "data": {**{k: v for k, v in meta.items() if k not in ("catalog",)},
                 "negative_hours": round(sw.negative_hours, 4), "negative_streams": sw.negative_streams,
                 "positive_streams": sw.positives},
        "scoring": {"stage3": settings.verify.enabled,
                    "fusion": DEFAULT_PARAMS.as_dict() if settings.verify.enabled else None,
                    "reference_hop_seconds": settings.catalog.reference_hop_seconds},
        "curve": {"score": [round(float(s), 5) for s in scores],
                  "fa_per_hour": [round(float(r), 6) for r in rates]},
        "curve_one_chunk": {"score": [round(float(s), 5) for s in scores1],
                            "fa_per_hour": [round(float(r), 6) for r in rates1]},
        "operating_point": op_doc,
        "at_run_threshold": at_run,
        "sweep": [sw.row(i) for i in range(0, len(thresholds), 2)],
        "negative_best_scores": {"max": round(float(np.max(sw.negative_best)), 4),
                                 "p99": round(float(np.quantile(sw.negative_best, 0.99)), 4),
                                 "median": round(float(np.median(sw.negative_best)), 4)},
    }
    out = args.out or default_path(model_path)
    plot = args.plot or model_path.with_name(model_path.stem + "-det.png")
    if not args.no_write:
        out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        plot_det(plot, sw, op, f"{meta['model_id']} — {sw.negative_hours:.1f} h of unrelated music")
    _report(doc, sw, op, time.perf_counter() - t0, None if args.no_write else (out, plot), records)
    return 0 if op is not None else 1


def _run_figures(results: Sequence[StreamResult], threshold: float) -> dict[str, Any]:
    """What the run itself (the live StreamMatcher at the configured threshold) emitted."""
    from streamcover.eval.detect import class_keys

    neg = [r for r in results if r.kind == "negative"]
    detected: dict[str, list[int]] = {}
    for r in results:
        if r.kind == "negative":
            continue
        hit = any(k == "match" and ref == r.true_ref for k, ref, _ in r.events)
        for key in class_keys(r):
            detected.setdefault(key, []).append(int(hit))
    return {"threshold": threshold,
            "false_alarm_events": sum(sum(k == "match" for k, _, _ in r.events) for r in neg),
            "recall": {k: round(sum(v) / len(v), 4) for k, v in sorted(detected.items())}}


def _report(doc: dict[str, Any], sw: Sweep, op: int | None, seconds: float,
            written: tuple[Path, Path] | None, records: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    d = doc["data"]
    con.print(f"model {doc['model_id']}; {d['negative_streams']} negative streams, "
              f"{d['negative_hours']:.2f} h; negative best scores: {doc['negative_best_scores']}")
    table = Table(title="false alarms per stream-hour and recall by threshold")
    classes = sorted(sw.recall)
    for col in ["threshold", "FA", "FA/h", "wrong ref", *classes]:
        table.add_column(col)
    marks = sorted({*([] if op is None else [op]), *range(0, len(sw.thresholds), 10)})
    for i in marks:
        r = sw.row(i)
        table.add_row(("* " if i == op else "") + f"{r['threshold']:.3f}", str(r["false_alarms"]),
                      f"{r['fa_per_hour']:.3f}", str(r["wrong_reference_events"]),
                      *[f"{r['recall'][c]:.3f}" for c in classes])
    con.print(table)
    con.print(f"run at threshold {doc['at_run_threshold']['threshold']}: {doc['at_run_threshold']}")
    con.print(f"operating point: {doc['operating_point']}")
    if written:
        con.print(f"wrote {written[0]} and {written[1]}")
    con.print(f"records: {records}; {seconds:.0f} s in all")
