"""Full-length mAP on the versions corpus's test split, broken down by source.

Every test recording queries all the others (the `streamcover eval` protocol and score
rule); the queries are then grouped by the source of their work (bach, essen-folksong,
irish-scottish, midi, audio), so one can see which kinds of version a model fails on.
Each source has only a few test works: the figures are indicative.

Usage:
    .venv/bin/python ops/train/corpus-by-source.py [CHECKPOINT] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from streamcover.config import get_settings
from streamcover.device import configure_threads
from streamcover.eval.embedders import EncoderEmbedder
from streamcover.eval.metrics import retrieval_metrics
from streamcover.eval.protocols import ChunkSets, full_length
from streamcover.model.checkpoint import load_checkpoint
from streamcover.train.manifest import manifest_tracks, read_manifest


def main() -> None:
    settings = get_settings()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, nargs="?", default=settings.encoder.model_path)
    ap.add_argument("--corpus", type=Path, default=settings.cache_dir / "corpus")
    args = ap.parse_args()
    configure_threads(1)
    loaded = load_checkpoint(args.checkpoint)
    entries = read_manifest(args.corpus / "manifest-test.jsonl")
    tracks = manifest_tracks(entries, loaded.cfg.frontend, settings)
    if len(tracks) != len(entries):
        raise SystemExit("some test recordings could not be decoded (see the log); rebuild "
                         "the corpus")
    # Work ids are "<source>:<...>"; manifest_tracks numbers works in sorted-name order.
    names = sorted({e.work for e in entries})
    sources = np.array([names[w].split(":", 1)[0] for w in tracks.works])
    sets = EncoderEmbedder(loaded.model, tracks.frames_per_second)(
        [tracks.feature(i) for i in range(len(tracks))])
    overall, sim = full_length(ChunkSets.from_list(sets), tracks.works,
                               rule=settings.catalog.score_rule)
    relevant = tracks.works[:, None] == tracks.works[None, :]
    exclude = np.eye(len(tracks), dtype=bool)
    rows = {"all": {"queries": len(tracks), "works": len(names),
                    "map": round(overall.map, 4), "p_at_10": round(overall.p_at_10, 4)}}
    for src in sorted(set(sources)):
        q = sources == src
        m = retrieval_metrics(sim[q], relevant[q], exclude[q])
        rows[src] = {"queries": int(q.sum()), "works": len(set(tracks.works[q])),
                     "map": round(m.map, 4), "p_at_10": round(m.p_at_10, 4)}
    print(f"{loaded.model_id} on {args.corpus / 'manifest-test.jsonl'}")
    for src, r in rows.items():
        print(f"{src:16s} queries {r['queries']:4d} works {r['works']:3d} "
              f"mAP {r['map']:.3f} P@10 {r['p_at_10']:.3f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
