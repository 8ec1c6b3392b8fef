"""A deliberately minimal training loop, to check the pipeline's learning speed against.

Random 20 s crops (43 HPCP frames) of SHS100K-TEST train recordings, P works x K
recordings per step, CosFace on the BNNeck feature + batch-hard triplet on GeM, Adam at a
constant learning rate; no clips, no LAL, no augmentation. Every ``--eval-every`` minutes
of training (evaluation time not counted) it prints the test split's full-length mAP by
the catalog's MaxMean rule and by the cosine of mean-pooled chunk embeddings.

It exists because the issue quotes a 25-minute probe that `streamcover train` did not
reproduce; the seventh session used it to separate what the recipe costs from what the
network's time resolution costs (docs/training.md). It is not the training command.

Usage:
    .venv/bin/python ops/train/probe_loop.py [--minutes 25] [--net inv|t2|t1|t1p]
        [--init models/streamcover-hpcp-compact.pt] [--lr 1e-3] [--P 64 --K 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from streamcover.config import PROJECT_ROOT
from streamcover.eval.embedders import EncoderEmbedder
from streamcover.eval.metrics import retrieval_metrics
from streamcover.eval.protocols import ChunkSets, full_length
from streamcover.model.checkpoint import load_checkpoint
from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder, count_parameters
from streamcover.train.losses import batch_hard_triplet
from streamcover.train.shs import DEFAULT_SHS_PATH, load_shs, read_split, split_tracks
from streamcover.train.tracks import TrackSet

WINDOW = 43  # 20 s of HPCP at 2.1533 frames/s
SPLIT = PROJECT_ROOT / "ops" / "train" / "shs100k-test-split.json"
# Time strides of the stem (conv, pool): the shipped 1/4, half that, none. Pitch is never
# strided, so all three stay transposition-invariant and have the same parameters.
NETS: dict[str, dict[str, object]] = {
    "inv": {"stem_stride": (1, 2), "stem_pool_stride": (1, 2)},
    "t2": {"stem_stride": (1, 1), "stem_pool_stride": (1, 2)},
    "t1": {"stem_stride": (1, 1), "stem_pool_stride": None},
    # t1 keeping the stem's 3x3 max-pool at stride 1: closer to a t2 model's function.
    "t1p": {"stem_stride": (1, 1), "stem_pool_stride": (1, 1)},
}


def encoder_config(net: str) -> EncoderConfig:
    return EncoderConfig.compact(
        "hpcp", name=f"probe-{net}", widths=(16, 32, 64, 128), stem_channels=16,
        stage_strides=((1, 1), (1, 2), (1, 2), (1, 1)), **NETS[net])


def evaluate(model: CoverEncoder, test: TrackSet) -> tuple[float, float]:
    """Full-length mAP on the test works: MaxMean (length-weighted) and mean-pooled cosine."""
    sets = EncoderEmbedder(model, test.frames_per_second)(
        [test.feature(i) for i in range(len(test))])
    maxmean, _ = full_length(ChunkSets.from_list(sets), test.works)
    mean = np.stack([s.mean(0) for s in sets])
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    pooled = retrieval_metrics(mean @ mean.T, test.works[:, None] == test.works[None, :],
                               np.eye(len(test), dtype=bool))
    return maxmean.map, pooled.map


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shs", type=Path, default=DEFAULT_SHS_PATH)
    ap.add_argument("--minutes", type=float, default=25.0, help="training minutes (no eval)")
    ap.add_argument("--eval-every", type=float, default=5.0, help="minutes between evals")
    ap.add_argument("--net", choices=sorted(NETS), default="inv")
    ap.add_argument("--init", type=Path, default=None, help="start from a model checkpoint")
    ap.add_argument("--P", type=int, default=64, help="works per step")
    ap.add_argument("--K", type=int, default=4, help="recordings (crops) per work")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the eval curve as JSON")
    a = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    tracks = load_shs(a.shs).tracks
    split = read_split(SPLIT)
    train, test = split_tracks(tracks, split, "train"), split_tracks(tracks, split, "test")
    labels = train.labels
    n_works = int(labels.max()) + 1
    by_work = [np.flatnonzero(labels == k) for k in range(n_works)]
    feats = [train.feature(i) for i in range(len(train))]

    model = CoverEncoder(encoder_config(a.net))
    if a.init is not None:
        model.load_state_dict(load_checkpoint(a.init).model.state_dict())
    classes = nn.Parameter(torch.randn(n_works, model.feat_dim) * 0.01)
    opt = torch.optim.Adam([*model.parameters(), classes], lr=a.lr)
    print(f"net {a.net}: {count_parameters(model)} parameters", flush=True)

    def crop(i: int) -> np.ndarray:
        f = feats[i]
        if f.shape[1] < WINDOW:
            f = np.tile(f, (1, -(-WINDOW // f.shape[1])))
        s = int(rng.integers(0, f.shape[1] - WINDOW + 1))
        return f[:, s : s + WINDOW]

    curve: list[dict[str, float]] = []
    start, step, next_eval = time.monotonic(), 0, a.eval_every
    while True:
        minutes = (time.monotonic() - start) / 60
        if minutes >= next_eval or minutes >= a.minutes:
            t_eval = time.monotonic()
            maxmean, pooled = evaluate(model, test)
            start += time.monotonic() - t_eval  # evaluation does not count as training
            curve.append({"minutes": round(minutes, 2), "step": step,
                          "map_maxmean": round(maxmean, 4), "map_meanpool": round(pooled, 4)})
            print(f"min {minutes:.1f} step {step} full mAP maxmean {maxmean:.3f} "
                  f"meanpool {pooled:.3f}", flush=True)
            next_eval += a.eval_every
            if minutes >= a.minutes:
                break
        model.train()
        xs, ys = [], []
        for w in rng.choice(n_works, a.P, replace=False):
            for i in rng.choice(by_work[w], a.K, replace=len(by_work[w]) < a.K):
                xs.append(crop(int(i)))
                ys.append(int(w))
        x = torch.from_numpy(np.stack(xs)).unsqueeze(1)
        y = torch.tensor(ys)
        out = model(x)
        cos = F.normalize(out.neck) @ F.normalize(classes).T
        logits = 30.0 * (cos - 0.2 * F.one_hot(y, n_works))
        loss = F.cross_entropy(logits, y) + batch_hard_triplet(out.pooled, y, 0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f}", flush=True)
    if a.out is not None:
        a.out.write_text(json.dumps(curve, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
