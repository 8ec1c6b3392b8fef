"""Reference-grid misalignment sweep: how an exact copy's score depends on where it starts.

References are real recordings from Debian music packages (fetched with
``ops/fetch-debian-media.sh``; music inside ``.pk3`` archives is extracted to the bench
cache), decoded by the real decoder, put through the real front end and embedded by the
shipped model into a real catalog (faiss snapshot, stored features) once per reference hop.
Queries are exact copies of the references, cut to start ``offset + 10·k`` seconds into
the recording (k a whole number, the same k for every offset, so the offsets are paired),
30 s and 60 s long. Each cut is written as 16-bit WAV, decoded again, put through the front
end and embedded on the query grid (``audio.window_seconds`` / ``audio.hop_seconds``), then
scored with ``TwoStageSearcher`` as the monitor scores it.

Prints, per (hop, length, offset): the correct reference's score (median, 10th percentile,
share >= --threshold) and the top-1 rate; per hop: bytes per reference second (embeddings,
SQLite, index snapshot, stored features). ``--out`` saves the JSON.

    nice -n 10 .venv/bin/python ops/bench/bench_grid.py --packages nexuiz-music,drascula-music

``--latency-shs NPZ`` measures search latency per reference hop instead: ``--recordings``
SHS100K-TEST recordings embedded at each hop (their stored features too), grown with
fitted distractors (``bench_catalog.make_grown_catalog``) to ``--grow-to`` chunks, and
queried by 60 s clips of other SHS recordings (5 chunks on the query grid), timing stage 1
(candidates) and stage 2 (MaxMean re-rank) as ``bench_catalog.py`` does.

    nice -n 10 .venv/bin/python ops/bench/bench_grid.py \
        --latency-shs ../shared/data/shs100k_test_hpcp_u8.npz --recordings 1000 --grow-to 1000000

The packages that trained the shipped model (warzone2100-music, wesnoth-1.16-music,
supertux-data) are refused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import wave
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamcover.config import PROJECT_ROOT, default_cache_dir, get_settings

TRAINING_PACKAGES = ("warzone2100-music", "wesnoth-1.16-music", "supertux-data")
AUDIO_SUFFIXES = (".ogg", ".mp3", ".flac", ".opus", ".wav")


@dataclass
class Track:
    id: str
    path: Path
    features: np.ndarray  # [bins, T] float32, the front end's output
    duration_s: float


@dataclass
class Query:
    ref_id: str
    offset_s: float  # off the 10 s grid
    length_s: float
    start_s: float
    vectors: np.ndarray
    starts: np.ndarray


def package_tracks(package: str, cache: Path, min_bytes: int) -> list[Path]:
    """Audio files of one Debian package, extracting ``.pk3`` (zip) archives once."""
    if package in TRAINING_PACKAGES:
        raise SystemExit(f"{package} trained the shipped model; pick another package")
    out = subprocess.run(["bash", str(PROJECT_ROOT / "ops" / "fetch-debian-media.sh"), package],
                         check=True, capture_output=True, text=True)
    root = Path(out.stdout.strip().splitlines()[-1])
    # Resolved and de-duplicated: some packages link one directory under several names.
    files = sorted({p.resolve() for p in root.rglob("*")
                    if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()})
    for pk3 in sorted(root.rglob("*.pk3")):
        dest = cache / "pk3" / package / pk3.stem
        with zipfile.ZipFile(pk3) as z:
            for info in z.infolist():
                name = Path(info.filename)
                if name.suffix.lower() not in AUDIO_SUFFIXES or info.file_size < min_bytes:
                    continue
                target = dest / name.name
                if not target.is_file() or target.stat().st_size != info.file_size:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                files.append(target)
    return [f for f in files if f.stat().st_size >= min_bytes]


def write_wav(path: Path, x: np.ndarray, sr: int) -> None:
    pcm = np.clip(np.rint(x * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def grid_positions(duration_s: float, length_s: float, max_offset: float, n: int) -> list[int]:
    """Up to ``n`` whole numbers k, evenly spread, with 10·k + max_offset + length inside."""
    k_max = int((duration_s - length_s - max_offset) // 10)
    if k_max < 0:
        return []
    return sorted({round(v) for v in np.linspace(0, k_max, min(n, k_max + 1))})


def load_tracks(paths: list[Path], args: argparse.Namespace, encoder: Any) -> tuple[
        list[Track], list[Query]]:
    """Decode every reference once; cut, re-decode and embed its queries on the way."""
    from streamcover.audio.decode import load_audio

    fe = encoder.frontend
    sr = fe.sample_rate
    tracks: list[Track] = []
    queries: list[Query] = []
    offsets = [float(o) for o in args.offsets.split(",")]
    lengths = [float(s) for s in args.lengths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(paths):
            wave_ = load_audio(path, sr)
            dur = len(wave_) / sr
            if dur < args.min_track_seconds:
                continue
            ref_id = f"{path.parent.name}/{path.stem}"
            tracks.append(Track(ref_id, path, fe.features(wave_), dur))
            for length in lengths:
                for k in grid_positions(dur, length, max(offsets), args.positions):
                    for off in offsets:
                        start = 10.0 * k + off
                        cut = wave_[round(start * sr): round((start + length) * sr)]
                        q = Path(tmp) / "q.wav"
                        write_wav(q, cut, sr)
                        emb = encoder.embed_features(fe.features(load_audio(q, sr)))
                        queries.append(Query(ref_id, off, length, start, emb.vectors, emb.starts))
            print(f"[{i + 1}/{len(paths)}] {ref_id}: {dur:.0f} s, {len(queries)} queries so far",
                  file=sys.stderr, flush=True)
    return tracks, queries


def build_catalog(path: Path, tracks: list[Track], hop: float, encoder: Any) -> float:
    """A real catalog at reference hop ``hop`` (embeddings, features, snapshot); seconds."""
    from streamcover.catalog.factory import IndexParams
    from streamcover.catalog.records import ReferenceInput
    from streamcover.catalog.snapshot import build_snapshot
    from streamcover.catalog.store import Catalog

    if path.exists():
        shutil.rmtree(path)
    t0 = time.perf_counter()
    fps = encoder.frontend.frames_per_second
    with Catalog.open(path, "a", model_id=encoder.model_id) as cat:
        batch = []
        for t in tracks:
            emb = encoder.embed_features(t.features, hop_seconds=hop)
            batch.append(ReferenceInput(t.id, emb.vectors, emb.starts, title=t.path.stem,
                                        duration=t.duration_s, features=t.features))
        cat.add_references(batch, encoder.model_id, reference_hop_s=hop, feature_fps=fps)
        build_snapshot(cat, IndexParams.from_settings(get_settings().catalog))
    return time.perf_counter() - t0


def catalog_bytes(path: Path, ref_seconds: float) -> dict[str, float]:
    """Bytes per reference second, by part, of a built catalog."""
    from streamcover.catalog.snapshot import current_snapshot_path
    from streamcover.catalog.store import Catalog

    with Catalog.open(path, "r") as cat:
        st = cat.stats()
    snap = current_snapshot_path(path)
    assert snap is not None
    index = sum(f.stat().st_size for f in snap.iterdir() if f.suffix in (".faiss", ".npy"))
    sqlite = sum(f.stat().st_size for f in path.glob("catalog.sqlite*"))
    parts = {"embeddings": st["segment_bytes"], "sqlite": sqlite, "index": index,
             "features": st["feature_bytes"]}
    out = {k: v / ref_seconds for k, v in parts.items()}
    out["total"] = sum(out.values())
    out["chunks"] = st["chunks"]
    return out


def score_queries(path: Path, queries: list[Query], model_id: str) -> list[dict[str, Any]]:
    from streamcover.catalog.search import TwoStageSearcher

    cs = get_settings().catalog
    searcher = TwoStageSearcher.open(path, cs, model_id=model_id)
    id_of = {r_key: r_id for r_id, r_key in _keys(path).items()}
    rows = []
    for q in queries:
        t0 = time.perf_counter()
        hits = searcher.search(q.vectors, q.starts, top_n=10)
        ms = 1000 * (time.perf_counter() - t0)
        score = next((h.score for h in hits if h.reference_id == q.ref_id), None)
        if score is None:  # outside the top 10: its exact score, for the distribution
            keys, scores = searcher.exhaustive_scores(q.vectors)
            score = float(scores[[id_of[int(k)] for k in keys].index(q.ref_id)])
        rows.append({"ref": q.ref_id, "offset": q.offset_s, "length": q.length_s,
                     "start": q.start_s, "score": float(score), "ms": ms,
                     "top1": bool(hits and hits[0].reference_id == q.ref_id)})
    searcher.close()
    return rows


def _keys(path: Path) -> dict[str, int]:
    from streamcover.catalog.store import Catalog

    with Catalog.open(path, "r") as cat:
        return {r.id: r.key for r in cat.references()}


def summarise(rows: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    out = []
    for length in sorted({r["length"] for r in rows}):
        for off in sorted({r["offset"] for r in rows}):
            sel = [r for r in rows if r["length"] == length and r["offset"] == off]
            s = np.array([r["score"] for r in sel])
            out.append({"length": length, "offset": off, "n": len(sel),
                        "median": float(np.median(s)), "p10": float(np.percentile(s, 10)),
                        "pass": float((s >= threshold).mean()),
                        "top1": float(np.mean([r["top1"] for r in sel]))})
    return out


def latency(args: argparse.Namespace, encoder: Any) -> dict[str, Any]:
    """Stage-1/2 latency per reference hop on real SHS embeddings grown to ``--grow-to``."""
    import faiss

    from streamcover.catalog.factory import IndexParams
    from streamcover.catalog.records import ReferenceInput, normalise_rows
    from streamcover.catalog.search import TwoStageSearcher
    from streamcover.catalog.snapshot import Snapshot, build_snapshot, current_snapshot_path
    from streamcover.catalog.store import Catalog
    from streamcover.catalog.view import SearchView
    from streamcover.train.shs import load_shs

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_catalog import make_grown_catalog

    tracks = load_shs(args.latency_shs).tracks
    fps = tracks.frames_per_second
    order = np.random.default_rng(7).permutation(len(tracks))
    rng = np.random.default_rng(8)
    clip = round(60.0 * fps)
    queries = []
    for i in order[: args.queries].tolist():
        f = tracks.feature(i)
        start = int(rng.integers(0, max(1, f.shape[1] - clip + 1)))
        emb = encoder.embed_features(f[:, start: start + clip])
        if len(emb) == 5:
            queries.append((normalise_rows(emb.vectors, "query"), emb.starts))
    refs = order[args.queries: args.queries + args.recordings].tolist()
    cs = get_settings().catalog
    params = IndexParams.from_settings(cs)
    out: dict[str, Any] = {"recordings": len(refs), "queries": len(queries), "hops": {}}
    paths: dict[str, Path] = {}
    for hop in (float(h) for h in args.hops.split(",")):
        real = args.cache / f"shs-hop{hop:g}-n{len(refs)}-{encoder.model_id}"
        t0 = time.perf_counter()
        if not (real / "catalog.sqlite").exists():
            tmp = real.with_name(real.name + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            with Catalog.open(tmp, "a", model_id=encoder.model_id) as cat:
                for lo in range(0, len(refs), 200):
                    batch = []
                    for i in refs[lo: lo + 200]:
                        f = tracks.feature(i)
                        emb = encoder.embed_features(f, hop_seconds=hop)
                        if len(emb):
                            batch.append(ReferenceInput(tracks.track_ids[i], emb.vectors,
                                                        emb.starts, features=f))
                    cat.add_references(batch, encoder.model_id, reference_hop_s=hop,
                                       feature_fps=fps)
            tmp.rename(real)
        embed_s = time.perf_counter() - t0
        path = real
        if args.grow_to:
            path = real.with_name(f"{real.name}-grow{args.grow_to}")
            make_grown_catalog(path, real, args.grow_to)
        t1 = time.perf_counter()
        faiss.omp_set_num_threads(args.build_threads)
        with Catalog.open(path, "r") as cat:
            n_chunks = cat.stats()["chunks"]
            sp = current_snapshot_path(path)
            current = (sp is not None and
                       Snapshot.load(sp, verify=False).manifest.store_version == cat.version)
            snap = sp if current and sp is not None else build_snapshot(cat, params)
        build_s = time.perf_counter() - t1
        faiss.omp_set_num_threads(1)
        out["hops"][f"{hop:g}"] = {
            "chunks": n_chunks, "embed_s": embed_s, "build_s": build_s, "reused": current,
            "index_bytes_per_chunk": (snap / "index.faiss").stat().st_size / n_chunks}
        paths[f"{hop:g}"] = path
    # Timed interleaved (each query on every hop in turn, rotating the order), so load from
    # other jobs falls on all hops alike.
    from streamcover.device import configure_search_threads

    configure_search_threads(cs.search_threads)
    views = {h: SearchView.open(p, verify=True) for h, p in paths.items()}
    searchers = {h: TwoStageSearcher(v, **_searcher_kwargs(cs)) for h, v in views.items()}
    times: dict[str, dict[str, list[float]]] = {
        h: {"s1": [], "s2": [], "cand": []} for h in paths}
    hops = list(paths)
    for n, (q, _st) in enumerate(queries[:20] + queries):
        for h in hops[n % len(hops):] + hops[: n % len(hops)]:
            view, searcher = views[h], searchers[h]
            a = time.perf_counter()
            keys, _ = searcher.candidates(view, q)
            b = time.perf_counter()
            screen = searcher.screens(view)
            searcher.rerank(view, q, keys, exact_top=searcher.leaders(10, screen), screen=screen)
            c = time.perf_counter()
            if n >= 20:  # the first 20 warm the maps and the graph
                times[h]["s1"].append(1000 * (b - a))
                times[h]["s2"].append(1000 * (c - b))
                times[h]["cand"].append(len(keys))
    for h, t in times.items():
        tot = np.add(t["s1"], t["s2"])
        out["hops"][h].update({
            "p50_ms": float(np.percentile(tot, 50)), "p99_ms": float(np.percentile(tot, 99)),
            "stage1_p50_ms": float(np.median(t["s1"])),
            "stage2_p50_ms": float(np.median(t["s2"])),
            "candidates_p50": float(np.median(t["cand"]))})
        print(f"hop {h}: {json.dumps(out['hops'][h])}", file=sys.stderr, flush=True)
    print(f"\n{len(refs)} SHS recordings per hop, grown to {args.grow_to or 'no'} chunks; "
          f"{len(queries)} queries of 60 s (5 chunks)")
    print("| ref hop | chunks | index B/chunk | stage 1+2 p50 ms | p99 ms | stage 1 p50 | "
          "stage 2 p50 | candidates |")
    print("|---|---|---|---|---|---|---|---|")
    for hop, r in out["hops"].items():
        print(f"| {hop} s | {r['chunks']:,} | {r['index_bytes_per_chunk']:.0f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['stage1_p50_ms']:.1f} | "
              f"{r['stage2_p50_ms']:.1f} | {r['candidates_p50']:.0f} |")
    return out


def _searcher_kwargs(cs: Any) -> dict[str, Any]:
    """The monitor's stage-1/2 settings for a searcher over a fixed view."""
    return {"top_k": cs.top_k, "max_candidates": cs.max_candidates, "refine": cs.stage1_refine,
            "fetch_factor": cs.stage1_fetch_factor, "screen": cs.stage2_screen,
            "screen_leaders": cs.stage2_screen_leaders,
            "centroid_candidates": cs.centroid_candidates, "score_rule": cs.score_rule}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packages", default="nexuiz-music,drascula-music")
    ap.add_argument("--hops", default="10,5,2.5", help="reference hops (s) to compare")
    ap.add_argument("--offsets", default="0,1.25,2.5,3.75,5", help="seconds off the 10 s grid")
    ap.add_argument("--lengths", default="30,60", help="query lengths (s)")
    ap.add_argument("--positions", type=int, default=3,
                    help="grid positions k per (track, length), spread over the track")
    ap.add_argument("--min-track-seconds", type=float, default=75.0)
    ap.add_argument("--max-tracks", type=int, default=0, help="0 = all")
    ap.add_argument("--threshold", type=float, default=get_settings().match.threshold)
    ap.add_argument("--checkpoint", type=Path,
                    default=PROJECT_ROOT / get_settings().encoder.model_path)
    ap.add_argument("--cache", type=Path, default=default_cache_dir() / "bench" / "grid")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--latency-shs", type=Path, default=None, metavar="SHS_NPZ",
                    help="measure search latency per hop on SHS embeddings instead")
    ap.add_argument("--recordings", type=int, default=1000, help="latency: SHS references")
    ap.add_argument("--queries", type=int, default=300, help="latency: 60 s queries")
    ap.add_argument("--grow-to", type=int, default=0, help="latency: grow each catalog to N chunks")
    ap.add_argument("--build-threads", type=int, default=2)
    args = ap.parse_args(argv)

    import faiss
    import torch

    from streamcover.model.inference import Encoder

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    encoder = Encoder.from_checkpoint(args.checkpoint, device="cpu")
    if args.latency_shs is not None:
        res = latency(args, encoder)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1))
        return 0
    paths = [p for pkg in args.packages.split(",")
             for p in package_tracks(pkg, args.cache, min_bytes=200_000)]
    if args.max_tracks:
        paths = paths[: args.max_tracks]
    t0 = time.perf_counter()
    tracks, queries = load_tracks(paths, args, encoder)
    ref_seconds = sum(t.duration_s for t in tracks)
    print(f"{len(tracks)} references ({ref_seconds / 3600:.2f} h), {len(queries)} queries, "
          f"model {encoder.model_id}, prepared in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "packages": args.packages.split(","), "model_id": encoder.model_id,
        "references": len(tracks), "reference_hours": ref_seconds / 3600,
        "queries": len(queries), "threshold": args.threshold, "hops": {}}
    for hop in (float(h) for h in args.hops.split(",")):
        path = args.cache / f"catalog-hop{hop:g}"
        build_s = build_catalog(path, tracks, hop, encoder)
        rows = score_queries(path, queries, encoder.model_id)
        result["hops"][f"{hop:g}"] = {
            "build_s": build_s, "bytes_per_ref_second": catalog_bytes(path, ref_seconds),
            "search_ms_median": float(np.median([r["ms"] for r in rows])),
            "summary": summarise(rows, args.threshold), "rows": rows}
    print(f"\n{len(tracks)} references, {len(queries)} queries per hop; score of the correct "
          f"reference (pass = share >= {args.threshold:.2f})")
    print("| ref hop | query | offset | n | median | p10 | pass | top-1 |")
    print("|---|---|---|---|---|---|---|---|")
    for hop, h in result["hops"].items():
        for s in h["summary"]:
            print(f"| {hop} s | {s['length']:g} s | {s['offset']:g} s | {s['n']} | "
                  f"{s['median']:.3f} | {s['p10']:.3f} | {s['pass']:.2f} | {s['top1']:.2f} |")
    print("\n| ref hop | chunks | embeddings | SQLite | index | features | total B/ref s |")
    print("|---|---|---|---|---|---|---|")
    for hop, h in result["hops"].items():
        b = h["bytes_per_ref_second"]
        print(f"| {hop} s | {b['chunks']:.0f} | {b['embeddings']:.1f} | {b['sqlite']:.1f} | "
              f"{b['index']:.1f} | {b['features']:.1f} | {b['total']:.1f} |")
    if len(result["hops"]) >= 2:
        # Fixed costs (SQLite pages, the PCA matrix, headers) dominate a small catalog; the
        # slope over the hops is what each further chunk costs, as in a large catalog.
        print("\nper chunk, fitted over the hops (a large catalog's cost): ", end="")
        hs = list(result["hops"].values())
        chunks = np.array([h["bytes_per_ref_second"]["chunks"] for h in hs])
        marginal = {}
        for part in ("embeddings", "sqlite", "index"):
            total = np.array([h["bytes_per_ref_second"][part] * ref_seconds for h in hs])
            marginal[part] = float(np.polyfit(chunks, total, 1)[0])
        result["bytes_per_chunk_marginal"] = marginal
        print(", ".join(f"{k} {v:.0f} B" for k, v in marginal.items()))
        print("| ref hop | chunks per ref s | B/ref s: embeddings + SQLite + index | features | total |")
        print("|---|---|---|---|---|")
        for hop, h in result["hops"].items():
            b = h["bytes_per_ref_second"]
            per_s = b["chunks"] / ref_seconds
            emb = per_s * sum(marginal.values())
            h["bytes_per_ref_second_large"] = {"chunks_per_s": per_s, "chunk_parts": emb,
                                               "features": b["features"],
                                               "total": emb + b["features"]}
            print(f"| {hop} s | {per_s:.3f} | {emb:.1f} | {b['features']:.1f} | "
                  f"{emb + b['features']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
