"""Stage-3 alignment speed: ms per (query, reference) pair, own numba Qmax vs librosa's rqa.

    nice -n 10 .venv/bin/python ops/bench/bench_align.py [--query-s 60] [--ref-s 240]
        [--pairs 40] [--candidates 20]

Pairs are real HPCP from ../shared/data (a SHS100K-TEST query excerpt against another
recording) when the file is there, else seeded random chroma (said so). Cases, each the
median over --pairs pairs of wall time on one thread:
  own/oti      align() with the OTI shift (the default)
  own/12       align() trying all 12 shifts
  librosa/oti  the same plot, Qmax by librosa.sequence.rqa (the maintained implementation)
  numpy/oti    the same plot, Qmax vectorised per row in numpy
  batch/oti    align_candidates() over --candidates references, per candidate
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streamcover.match import align as A  # noqa: E402

SHS = Path("/work/shared/data/shs100k_test_hpcp_u8.npz")


def _pairs(n: int, t1: int, t2: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    rng = np.random.default_rng(0)
    if SHS.is_file():
        with np.load(SHS) as z:
            feat, off = z["feat"], z["offsets"]
        lens = np.diff(off)
        long_ = np.flatnonzero(lens >= t2)
        pick = rng.choice(long_, size=(n, 2), replace=True)
        out = []
        for a, b in pick:
            s = int(rng.integers(0, lens[a] - t1 + 1))
            q = feat[off[a] + s : off[a] + s + t1].T.astype(np.float32) / 255.0
            out.append((q, feat[off[b] : off[b] + t2]))
        return out, "SHS100K-TEST HPCP"
    return [((rng.random((12, t1))).astype(np.float32),
             (rng.random((t2, 12)) * 255).astype(np.uint8)) for _ in range(n)], "random chroma"


def numpy_qmax(rec: np.ndarray, gap_onset: float, gap_extend: float) -> float:
    """The same Qmax recursion vectorised over each row with numpy (row i needs only rows
    i-1 and i-2): the pure-numpy option, for timing."""
    n1, n2 = rec.shape
    r = np.zeros((n1 + 2, n2 + 2), bool)
    r[2:, 2:] = rec != 0
    pen = np.where(r, gap_onset, gap_extend)
    q1, q2 = np.zeros(n2 + 2), np.zeros(n2 + 2)
    best = 0.0
    for i in range(2, n1 + 2):
        a, b, c = q1[1:-1], q2[1:-1], q1[:-2]
        hit = np.maximum(np.maximum(a, b), c) + 1.0
        miss = np.maximum(np.maximum(a - pen[i - 1, 1:-1], b - pen[i - 2, 1:-1]),
                          c - pen[i - 1, :-2])
        row = np.zeros(n2 + 2)
        row[2:] = np.where(r[i, 2:], hit, np.maximum(miss, 0.0))
        best = max(best, float(row.max()))
        q1, q2 = row, q1
    return best


def _plot_oti(q: np.ndarray, ref: np.ndarray) -> np.ndarray:
    qp = A._prepare(q, True, "query", A.DEFAULT_MAX_QUERY_FRAMES, A.DEFAULT_DIM, A.DEFAULT_DELAY)
    r = A._as_time_major(ref, False, "reference")
    shift = int(A.oti_shifts(qp.frames, r, 1)[0])
    r_emb, r_voiced = A.embed_frames(np.roll(r, shift, axis=1), A.DEFAULT_DIM, A.DEFAULT_DELAY)
    return A._mutual_knn(qp.emb, qp.voiced, r_emb, r_voiced, A.DEFAULT_KAPPA)


def _numpy_oti(q: np.ndarray, ref: np.ndarray) -> float:
    return numpy_qmax(_plot_oti(q, ref), A.DEFAULT_GAP_ONSET, A.DEFAULT_GAP_EXTEND)


def _librosa_oti(q: np.ndarray, ref: np.ndarray) -> float:
    import librosa.sequence

    rec = _plot_oti(q, ref)
    score = librosa.sequence.rqa(rec.astype(np.float32), gap_onset=A.DEFAULT_GAP_ONSET,
                                 gap_extend=A.DEFAULT_GAP_EXTEND, knight_moves=True,
                                 backtrack=False)
    return float(score.max())


def _time(fn: object, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list[float]]:
    fn(*pairs[0])  # type: ignore[operator]  # compile / warm up
    times, values = [], []
    for q, r in pairs:
        t = time.perf_counter()
        values.append(float(fn(q, r)))  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--query-s", type=float, default=60.0)
    ap.add_argument("--ref-s", type=float, default=240.0)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--candidates", type=int, default=20)
    args = ap.parse_args()
    t1, t2 = round(args.query_s * A.FRAMES_PER_SECOND), round(args.ref_s * A.FRAMES_PER_SECOND)
    pairs, source = _pairs(args.pairs, t1, t2)
    own_oti, v_oti = _time(lambda q, r: A.align(q, r).qmax, pairs)
    own_12, _ = _time(lambda q, r: A.align(q, r, transpositions=12).qmax, pairs)
    lib_oti, v_lib = _time(_librosa_oti, pairs)
    np_oti, v_np = _time(_numpy_oti, pairs)
    refs = [r for _, r in pairs[: args.candidates]]
    A.align_candidates(pairs[0][0], refs[:1])
    batch = []
    for q, _ in pairs[:5]:
        t = time.perf_counter()
        A.align_candidates(q, refs)
        batch.append((time.perf_counter() - t) * 1e3 / len(refs))
    res = {
        "source": source, "query_frames": t1, "reference_frames": t2, "pairs": len(pairs),
        "ms_per_pair": {"own/oti": round(own_oti, 3), "own/12": round(own_12, 3),
                        "librosa/oti": round(lib_oti, 3), "numpy/oti": round(np_oti, 3),
                        "batch/oti": round(statistics.median(batch), 3)},
        "librosa_agrees": bool(np.allclose(v_oti, v_lib)),
        "numpy_agrees": bool(np.allclose(v_oti, v_np)),
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
