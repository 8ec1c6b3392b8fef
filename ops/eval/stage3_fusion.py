"""Stage-3 study: does Qmax alignment of the top-N MaxMean candidates help, and by which rule?

    nice -n 10 .venv/bin/python ops/eval/stage3_fusion.py [--top 20] [--out /tmp/stage3.json]
        [--tune-align] [--max-queries 0] [--reuploads 150]

For every query (each recording at full length, and one 60 s and one 30 s excerpt of it)
of SHS100K-TEST's ``val`` and ``test`` works and of the custom set, the shipped model's
MaxMean ranks all other full-length recordings of the same set (own recording excluded);
the top ``--top`` are aligned (``streamcover.match.align``) and re-scored by each rule.
Rules and their parameters are chosen on ``val`` only; ``test`` and ``custom`` are report
only. Per rule: mAP and MR1 (candidates re-ranked, the rest keep MaxMean order) and the
recall at zero false alarms: the fraction of queries whose best candidate of the right
work scores above the highest score any query of the set reaches on a wrong work.
Embeddings and alignments are cached under ~/.cache/streamcover/stage3/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from stage3_data import CACHE, QUERY_LENGTHS, load_set, queries  # noqa: E402

from streamcover.eval.baselines import Ftm2dEmbedder  # noqa: E402
from streamcover.eval.metrics import retrieval_metrics  # noqa: E402
from streamcover.eval.protocols import ChunkSets, maxmean_matrix  # noqa: E402
from streamcover.match import align as A  # noqa: E402
from streamcover.match import fusion as F  # noqa: E402
from streamcover.train.tracks import TrackSet  # noqa: E402

VOTE_TOLERANCE_S = 7.5


@dataclass
class Scored:
    """One set at one query length: the MaxMean matrix and stage-3 features of the top-N."""

    sim: np.ndarray  # [Q, R] MaxMean
    relevant: np.ndarray  # [Q, R]
    exclude: np.ndarray  # [Q, R]
    cand: np.ndarray  # [Q, N] candidate reference indices, MaxMean order
    mm: np.ndarray  # [Q, N]
    al: np.ndarray  # [Q, N] alignment score (Qmax / shorter length)
    qmax: np.ndarray  # [Q, N]
    short: np.ndarray  # [Q, N] shorter embedded length (frames)
    vote: np.ndarray  # [Q, N] fraction of query chunks on one time-offset line
    rel: np.ndarray  # [Q, N] candidate is the query's work
    snorm: np.ndarray | None = None  # [Q, N] s-normed MaxMean (fixed impostor cohort)


def _key(**kw: object) -> str:
    return hashlib.sha1(json.dumps(kw, sort_keys=True, default=str).encode()).hexdigest()[:12]


def offset_vote(q_starts: np.ndarray, r_starts: np.ndarray, best: np.ndarray,
                tol: float = VOTE_TOLERANCE_S) -> float:
    """Fraction of query chunks whose best reference chunk lies on one line
    ``t_ref = a + t_query`` (within ``tol`` seconds): the landmark fingerprinters' vote."""
    if len(best) == 0:
        return 0.0
    off = r_starts[best] - q_starts
    counts = (np.abs(off[:, None] - off[None, :]) <= tol).sum(axis=1)
    return float(counts.max()) / len(off)


def score_set(name: str, tracks: TrackSet, seconds: float | None, top: int,
              align_kw: dict[str, float | int], max_queries: int = 0) -> Scored:
    """MaxMean over the set, then alignment and vote on each query's top-N (cached)."""
    refs_q = queries(name, tracks, None)
    qs = queries(name, tracks, seconds)
    n_q = len(tracks) if max_queries <= 0 else min(max_queries, len(tracks))
    sim = maxmean_matrix(ChunkSets.from_list(qs.vectors[:n_q]), ChunkSets.from_list(refs_q.vectors))
    works = np.asarray(tracks.works)
    relevant = works[:n_q, None] == works[None, :]
    exclude = np.zeros_like(relevant)
    exclude[np.arange(n_q), np.arange(n_q)] = True
    masked = np.where(exclude, -np.inf, sim)
    cand = np.argsort(-masked, axis=1, kind="stable")[:, :top]
    mm = np.take_along_axis(sim, cand, axis=1)
    tag = "full" if seconds is None else f"{seconds:g}s"
    path = CACHE / f"align-{name}-{tag}-{_key(top=top, n=n_q, **align_kw)}.npz"
    if path.is_file():
        with np.load(path) as z:
            al, qm, short, vote = z["al"], z["qmax"], z["short"], z["vote"]
    else:
        al = np.zeros(cand.shape, np.float32)
        qm, short, vote = np.zeros_like(al), np.zeros_like(al), np.zeros_like(al)
        span = (int(align_kw.get("dim", A.DEFAULT_DIM)) - 1) * int(align_kw.get("delay", 1))
        for i in range(n_q):
            qf = tracks.feature(i, int(qs.starts[i]), int(qs.starts[i] + qs.lengths[i]))
            res = A.align_candidates(qf, [tracks.features[j] for j in cand[i]],
                                     **align_kw)  # type: ignore[arg-type]
            for k, (j, r) in enumerate(zip(cand[i], res, strict=True)):
                al[i, k], qm[i, k] = r.score, r.qmax
                short[i, k] = max(0, min(r.query_frames, r.reference_frames) - span)
                if len(qs.vectors[i]) and len(refs_q.vectors[j]):
                    best = np.argmax(qs.vectors[i] @ refs_q.vectors[j].T, axis=1)
                    vote[i, k] = offset_vote(qs.chunk_starts[i], refs_q.chunk_starts[j], best)
        np.savez(path, al=al, qmax=qm, short=short, vote=vote)
    rel = np.take_along_axis(relevant, cand, axis=1)
    return Scored(sim, relevant, exclude, cand, mm, al, qm, short, vote, rel)


COHORT_SIZE = 300
COHORT_TOP = 50


def snorm_maxmean(name: str, tracks: TrackSet, seconds: float | None, s: Scored,
                  cohort: TrackSet, cohort_name: str) -> np.ndarray:
    """Adaptive s-norm of the candidates' MaxMean against a fixed impostor cohort (recordings
    of another set, so of other works): z-scores of the query and of the reference against
    their ``COHORT_TOP`` best cohort scores, averaged. Needs no other query."""
    rng = np.random.default_rng(11)
    pick = rng.choice(len(cohort), size=min(COHORT_SIZE, len(cohort)), replace=False)
    c_all = queries(cohort_name, cohort, None).vectors
    c_sets = ChunkSets.from_list([c_all[i] for i in pick])
    q_vec = queries(name, tracks, seconds).vectors[: len(s.mm)]
    r_vec = queries(name, tracks, None).vectors

    def stats(vectors: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        c = np.sort(maxmean_matrix(ChunkSets.from_list(vectors), c_sets), axis=1)[:, -COHORT_TOP:]
        return c.mean(1), np.maximum(c.std(1), 1e-3)

    mq, sq = stats(q_vec)
    mr, sr = stats(r_vec)
    zq = (s.mm - mq[:, None]) / sq[:, None]
    zr = (s.mm - mr[s.cand]) / sr[s.cand]
    return (0.5 * (zq + zr)).astype(np.float32)


# --- rules: each maps a Scored (and parameters) to fused scores of the candidates [Q, N] ----

def _qnorm(x: np.ndarray) -> np.ndarray:
    """Per-query z-normalisation over the candidates (peeks at the other candidates)."""
    return (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, keepdims=True), 1e-6)


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(-x, axis=1, kind="stable"), axis=1) + 1


Rule = Callable[[Scored], np.ndarray]


def rules(params: dict[str, float], lr: F.FusionParams | None,
          lr_snorm: F.FusionParams | None = None) -> dict[str, Rule]:
    w_q, w_r, lam = params["w_qnorm"], params["w_raw"], params["vote_lambda"]
    out: dict[str, Rule] = {
        "maxmean": lambda s: s.mm,
        "align": lambda s: s.al + 1e-3 * s.mm,
        "align/sqrt": lambda s: s.qmax / np.sqrt(np.maximum(s.short, 1)) + 1e-3 * s.mm,
        f"qnorm sum (w={w_q:g})": lambda s: w_q * _qnorm(s.mm) + (1 - w_q) * _qnorm(s.al),
        f"raw sum (w={w_r:g})": lambda s: w_r * s.mm + (1 - w_r) * s.al,
        "product": lambda s: np.clip(s.mm, 0, None) * s.al,
        "rank fusion (RRF, k=10)": lambda s: 1 / (10 + _ranks(s.mm)) + 1 / (10 + _ranks(s.al)),
        f"maxmean + vote (λ={lam:g})": lambda s: s.mm + lam * s.vote,
    }
    if lr is not None:
        out["logistic (mm, align)"] = lambda s: F.fuse(s.mm, s.al, lr)
    if lr_snorm is not None:
        out["s-norm maxmean"] = lambda s: _need(s.snorm)
        out["logistic (s-norm mm, align)"] = lambda s: F.fuse(_need(s.snorm), s.al, lr_snorm)
    return out


def _need(x: np.ndarray | None) -> np.ndarray:
    if x is None:
        raise ValueError("s-norm scores were not computed")
    return x


def evaluate(s: Scored, fused: np.ndarray) -> dict[str, float]:
    """mAP/MR1 with the candidates re-ranked by ``fused``; recall at zero false alarms."""
    full = s.sim.astype(np.float64).copy()
    order = np.argsort(np.argsort(-fused, axis=1, kind="stable"), axis=1)  # 0 = best
    n = fused.shape[1]
    # Candidates sit above every other reference, in fused order; the rest keep MaxMean order.
    np.put_along_axis(full, s.cand, 10.0 + (n - order), axis=1)
    m = retrieval_metrics(full, s.relevant, s.exclude)
    neg = np.where(s.rel, -np.inf, fused).max()
    pos = np.where(s.rel, fused, -np.inf).max(axis=1)
    has_pos = (s.relevant & ~s.exclude).any(1)
    recall0 = float((pos > neg).sum() / max(1, has_pos.sum()))
    return {"map": round(m.map, 4), "mr1": round(m.mr1, 2), "recall_at_0fa": round(recall0, 4),
            "queries": m.n_queries}


def ftm_map(tracks: TrackSet, seconds: float | None) -> float:
    """2DFTM baseline: same queries, whole-recording vectors, cosine ranking."""
    refs = Ftm2dEmbedder()([tracks.feature(i) for i in range(len(tracks))])
    from stage3_data import excerpt_starts

    st, ln = excerpt_starts(tracks, seconds)
    qv = Ftm2dEmbedder()([tracks.feature(i, int(st[i]), int(st[i] + ln[i]))
                          for i in range(len(tracks))])
    sim = np.concatenate(qv) @ np.concatenate(refs).T
    works = np.asarray(tracks.works)
    return retrieval_metrics(sim, works[:, None] == works[None, :],
                             np.eye(len(works), dtype=bool)).map


def tune_align(tracks: TrackSet, top: int, n_queries: int) -> list[dict[str, object]]:
    """One-factor-at-a-time sweep of the alignment parameters on val 60 s queries."""
    base: dict[str, float | int] = {"dim": A.DEFAULT_DIM, "delay": A.DEFAULT_DELAY,
                                    "kappa": A.DEFAULT_KAPPA, "gap_onset": A.DEFAULT_GAP_ONSET,
                                    "gap_extend": A.DEFAULT_GAP_EXTEND, "transpositions": 1}
    grid: list[dict[str, float | int]] = [{}]
    grid += [{"dim": d} for d in (1, 5, 13, 17)]
    grid.append({"delay": 2})
    grid += [{"kappa": k} for k in (0.05, 0.2)]
    grid += [{"gap_onset": 2.0, "gap_extend": 1.0}, {"gap_onset": 1.0, "gap_extend": 1.0}]
    grid += [{"transpositions": 2}]
    # 12 shifts cost 12x: compared with OTI on a third of the queries.
    runs = [(c, n_queries) for c in grid]
    runs += [({"transpositions": 1}, n_queries // 3), ({"transpositions": 12}, n_queries // 3)]
    rows = []
    for change, n in runs:
        kw = {**base, **change}
        t = time.perf_counter()
        s = score_set("val", tracks, 60.0, top, kw, n)
        dt = time.perf_counter() - t
        row: dict[str, object] = {"change": change or "defaults", "queries": n,
                                  "seconds": round(dt, 1)}
        row["maxmean"] = evaluate(s, s.mm)
        row["align"] = evaluate(s, s.al + 1e-3 * s.mm)
        row["qnorm sum 0.5"] = evaluate(s, 0.5 * _qnorm(s.mm) + 0.5 * _qnorm(s.al))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def pick_params(val: list[Scored]
                ) -> tuple[dict[str, float], F.FusionParams, F.FusionParams]:
    """Rule parameters on val: grid weights by mean mAP over lengths; logistic fit on pairs."""
    def mean_map(rule: Callable[[Scored], np.ndarray]) -> float:
        return float(np.mean([evaluate(s, rule(s))["map"] for s in val]))

    grid = np.round(np.arange(0.0, 1.01, 0.1), 2)
    w_q = max(grid, key=lambda w: mean_map(lambda s: w * _qnorm(s.mm) + (1 - w) * _qnorm(s.al)))
    w_r = max(grid, key=lambda w: mean_map(lambda s: w * s.mm + (1 - w) * s.al))
    lam = max((0.0, 0.05, 0.1, 0.2, 0.3, 0.5), key=lambda v: mean_map(lambda s: s.mm + v * s.vote))
    mm = np.concatenate([s.mm.ravel() for s in val])
    al = np.concatenate([s.al.ravel() for s in val])
    y = np.concatenate([s.rel.ravel() for s in val])
    lr = F.fit(mm, al, y)
    lr_snorm = F.fit(np.concatenate([_need(s.snorm).ravel() for s in val]), al, y)
    return ({"w_qnorm": float(w_q), "w_raw": float(w_r), "vote_lambda": float(lam)}, lr,
            lr_snorm)


def speed_copy(feat: np.ndarray, factor: float) -> np.ndarray:
    """HPCP [12, T] of a recording played ``factor`` times as fast: frames resampled by
    linear interpolation and chroma rolled by the pitch change (6 % is about a semitone)."""
    n = feat.shape[1]
    m = max(1, round(n / factor))
    t = np.linspace(0, n - 1, m)
    out = np.stack([np.interp(t, np.arange(n), row) for row in feat]).astype(np.float32)
    return np.roll(out, round(12 * np.log2(factor)), axis=0)


def reupload_check(tracks: TrackSet, thresholds: dict[str, float], fuse_rule: F.FusionParams,
                   top: int, n: int, seconds: tuple[float, ...] = (20.0, 30.0, 60.0),
                   factors: tuple[float, ...] = (0.94, 1.0, 1.06)) -> dict[str, object]:
    """Near-exact copies: an excerpt of a catalogued recording, sped up or slowed down,
    against the set's full recordings (its own included). Per (length, factor): the share
    whose own recording is the top MaxMean candidate, and the share above each rule's
    zero-false-alarm threshold from the cover study (``thresholds``) on MaxMean and fused."""
    from streamcover.model.inference import Encoder

    refs = queries("val", tracks, None)
    ref_sets = ChunkSets.from_list(refs.vectors)
    rng = np.random.default_rng(7)
    pick = rng.choice(len(tracks), size=min(n, len(tracks)), replace=False)
    path = CACHE / f"reupload-{_key(n=n, top=top, s=seconds, f=factors)}.npz"
    rows: dict[str, object] = {}
    cached = dict(np.load(path)) if path.is_file() else {}
    encoder = None
    for sec in seconds:
        for fac in factors:
            key = f"{sec:g}s x{fac:g}"
            if f"{key}/mm" not in cached:
                encoder = encoder or Encoder.from_checkpoint(
                    HERE.parents[1] / "models/streamcover-hpcp-compact.pt", device="cpu")
                mms, als = [], []
                for i in pick:
                    frames = round(sec * fac * A.FRAMES_PER_SECOND)
                    start = int(rng.integers(0, max(1, tracks.n_frames(i) - frames)))
                    q = speed_copy(tracks.feature(i, start, start + frames), fac)
                    vec = encoder.embed_features(q).vectors
                    sim = maxmean_matrix(ChunkSets.from_list([vec]), ref_sets)[0]
                    cand = np.argsort(-sim, kind="stable")[:top]
                    al = A.align_candidates(q, [tracks.features[j] for j in cand])
                    own = cand == i
                    mms.append([sim[i], float(own[0])])
                    als.append([al[int(np.flatnonzero(own)[0])].score if own.any() else 0.0])
                cached[f"{key}/mm"] = np.array(mms)
                cached[f"{key}/al"] = np.array(als)
                np.savez(path, **cached)
            mm, top1 = cached[f"{key}/mm"][:, 0], cached[f"{key}/mm"][:, 1]
            al = cached[f"{key}/al"][:, 0]
            fused = F.fuse(mm, al, fuse_rule)
            rows[key] = {
                "top1": round(float(top1.mean()), 3),
                "maxmean_median": round(float(np.median(mm)), 3),
                "align_median": round(float(np.median(al)), 3),
                "fused_median": round(float(np.median(fused)), 3),
                "over_0fa_maxmean": round(float((mm > thresholds["maxmean"]).mean()), 3),
                "over_0fa_fused": round(float((fused > thresholds["fused"]).mean()), 3),
            }
            print(key, rows[key], flush=True)
    return rows


def render_markdown(result: dict[str, object]) -> str:
    """The study's tables as markdown (for docs/results)."""
    lines: list[str] = []
    table = result.get("table")
    if isinstance(table, dict):
        cols = list(next(iter(table.values())).keys())
        lines.append("| rule | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for rname, vals in table.items():
            cells = []
            for c in cols:
                v = vals.get(c, {})
                cells.append(f"{v['map']:.3f}" + (f" / {v['mr1']:.1f}" if "mr1" in v else ""))
            lines.append(f"| {rname} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Recall at zero false alarms (share of queries whose right work scores above "
                     "every wrong-work score of the set):")
        lines.append("")
        lines.append("| rule | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for rname, vals in table.items():
            if all("recall_at_0fa" in vals.get(c, {}) for c in cols):
                lines.append(f"| {rname} | " + " | ".join(
                    f"{vals[c]['recall_at_0fa']:.3f}" for c in cols) + " |")
    sweep = result.get("align_sweep")
    if isinstance(sweep, list):
        lines.append("| change from defaults | queries | MaxMean mAP | align mAP | align recall@0FA "
                     "| qnorm sum mAP | s |")
        lines.append("|---|---|---|---|---|---|---|")
        for row in sweep:
            lines.append(f"| {row['change']} | {row['queries']} | {row['maxmean']['map']:.3f} | "
                         f"{row['align']['map']:.3f} | {row['align']['recall_at_0fa']:.3f} | "
                         f"{row['qnorm sum 0.5']['map']:.3f} | {row['seconds']} |")
    reup = result.get("reuploads")
    if isinstance(reup, dict):
        keys = ["top1", "maxmean_median", "align_median", "fused_median", "over_0fa_maxmean",
                "over_0fa_fused"]
        lines.append("")
        lines.append("| copy | " + " | ".join(keys) + " |")
        lines.append("|---|" + "---|" * len(keys))
        for k, v in reup.items():
            lines.append(f"| {k} | " + " | ".join(str(v[x]) for x in keys) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("/tmp/stage3.json"))
    ap.add_argument("--tune-align", action="store_true",
                    help="only sweep the alignment parameters (val, 60 s queries)")
    ap.add_argument("--tune-queries", type=int, default=300)
    ap.add_argument("--max-queries", type=int, default=0)
    ap.add_argument("--reuploads", type=int, default=150, help="recordings in the copy check")
    ap.add_argument("--render", type=Path, help="print a result JSON as markdown and exit")
    args = ap.parse_args()
    if args.render:
        print(render_markdown(json.loads(args.render.read_text())))
        return
    result: dict[str, object] = {"top": args.top}
    sets = {name: load_set(name) for name in ("val", "test", "custom")}
    if args.tune_align:
        result["align_sweep"] = tune_align(sets["val"], args.top, args.tune_queries)
        args.out.write_text(json.dumps(result, indent=1))
        return
    kw: dict[str, float | int] = {}
    scored = {(n, sec): score_set(n, sets[n], sec, args.top, kw, args.max_queries)
              for n in sets for sec in QUERY_LENGTHS}
    for (n, sec), s in scored.items():
        cohort = "test" if n == "val" else "val"
        s.snorm = snorm_maxmean(n, sets[n], sec, s, sets[cohort], cohort)
    params, lr, lr_snorm = pick_params([scored[("val", sec)] for sec in QUERY_LENGTHS])
    result["params"] = {**params, "logistic": lr.as_dict(), "logistic_snorm": lr_snorm.as_dict()}
    table: dict[str, dict[str, dict[str, float]]] = {}
    for (n, sec), s in scored.items():
        col = f"{n} {'full' if sec is None else f'{sec:g}s'}"
        for rname, rule in rules(params, lr, lr_snorm).items():
            table.setdefault(rname, {})[col] = evaluate(s, rule(s))
        table.setdefault("2DFTM baseline", {})[col] = {"map": round(ftm_map(sets[n], sec), 4)}
    result["table"] = table
    val_s = [scored[("val", sec)] for sec in QUERY_LENGTHS]
    thresholds = {
        "maxmean": float(max(np.where(s.rel, -np.inf, s.mm).max() for s in val_s)),
        "fused": float(max(np.where(s.rel, -np.inf, F.fuse(s.mm, s.al, lr)).max()
                           for s in val_s)),
    }
    result["val_zero_fa_thresholds"] = thresholds
    if args.reuploads:
        result["reuploads"] = reupload_check(sets["val"], thresholds, lr, args.top, args.reuploads)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["params"], indent=1))
    for rname, cols in table.items():
        print(rname, {c: (v["map"], v.get("mr1"), v.get("recall_at_0fa")) for c, v in cols.items()})


if __name__ == "__main__":
    main()
