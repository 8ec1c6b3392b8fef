"""Would tempo-stretched copies of the references help retrieval? Prints test-split mAP.

Catalog-side augmentation costs index size, not per-stream work: every reference would
also be indexed time-stretched by each factor, and a query's score for a reference is the
best over its copies. This measures it on the SHS100K-TEST test split (full-length queries
and the eval's 30 s clips, the catalog's score rule) before anyone builds it.

Usage:
    .venv/bin/python ops/train/tempo-variants.py [CHECKPOINT] [--factors 0.8,1.25]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from streamcover.config import PROJECT_ROOT, get_settings
from streamcover.data.shs import DEFAULT_SHS_PATH, load_shs, read_split, split_tracks
from streamcover.device import configure_threads
from streamcover.eval.embedders import EncoderEmbedder
from streamcover.eval.metrics import retrieval_metrics
from streamcover.eval.protocols import ChunkSets, cut_query_clips, maxmean_matrix
from streamcover.model.checkpoint import load_checkpoint
from streamcover.train.augment import time_stretch


def main() -> None:
    settings = get_settings()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, nargs="?", default=settings.encoder.model_path)
    ap.add_argument("--factors", default="0.8,1.25", help="tempo factors of the copies")
    ap.add_argument("--shs", type=Path, default=DEFAULT_SHS_PATH)
    ap.add_argument("--seed", type=int, default=0, help="clip offsets (as streamcover eval)")
    args = ap.parse_args()
    factors = [float(f) for f in args.factors.split(",") if f.strip()]
    configure_threads(1)
    rule = settings.catalog.score_rule
    loaded = load_checkpoint(args.checkpoint)
    split = read_split(PROJECT_ROOT / "ops" / "train" / "shs100k-test-split.json")
    tracks = split_tracks(load_shs(args.shs).tracks, split, "test")
    embed = EncoderEmbedder(loaded.model, tracks.frames_per_second)
    feats = [tracks.feature(i) for i in range(len(tracks))]
    originals = ChunkSets.from_list(embed(feats))
    clips = ChunkSets.from_list(embed(cut_query_clips(tracks, 30.0, args.seed)))
    # Scores of (full-length queries, 30 s clips) against each set of reference copies.
    scores = {1.0: (maxmean_matrix(originals, originals, rule=rule),
                    maxmean_matrix(clips, originals, rule=rule))}
    for f in factors:
        copies = ChunkSets.from_list(embed([time_stretch(x, f) for x in feats]))
        scores[f] = (maxmean_matrix(originals, copies, rule=rule),
                     maxmean_matrix(clips, copies, rule=rule))
    relevant = tracks.works[:, None] == tracks.works[None, :]
    own = np.eye(len(tracks), dtype=bool)

    def report(keys: list[float]) -> None:
        full = np.max([scores[k][0] for k in keys], axis=0)
        short = np.max([scores[k][1] for k in keys], axis=0)
        print(f"references at tempo {keys}: full mAP "
              f"{retrieval_metrics(full, relevant, own).map:.4f}, 30 s mAP "
              f"{retrieval_metrics(short, relevant, own).map:.4f}", flush=True)

    print(f"{loaded.model_id}, {len(tracks)} test recordings, rule {rule}")
    report([1.0])
    for f in factors:
        report([1.0, f])
    if len(factors) > 1:
        report([1.0, *factors])


if __name__ == "__main__":
    main()
