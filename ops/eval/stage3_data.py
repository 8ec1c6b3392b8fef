"""Data for the stage-3 study: real cover sets, query excerpts and cached chunk embeddings.

    nice -n 10 .venv/bin/python ops/eval/stage3_data.py      # fill the cache only

Sets: SHS100K-TEST restricted to the ``val`` and ``test`` works of
``ops/train/shs100k-test-split.json`` and the independent custom set. Each recording is a
query at full length and as one 60 s and one 30 s excerpt (seeded start, recorded here so
the alignment sees the same frames as the encoder). Embeddings are cached under
``~/.cache/streamcover/stage3/`` keyed by model file digest, set, excerpt length and seed,
so a rerun of the study only re-scores.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streamcover.train.shs import load_shs, read_split, split_tracks  # noqa: E402
from streamcover.train.tracks import TrackSet  # noqa: E402

SHS_PATH = Path("/work/shared/data/shs100k_test_hpcp_u8.npz")
CUSTOM_PATH = Path("/work/shared/data/custom_hpcp_u8.npz")
SPLIT_PATH = ROOT / "ops/train/shs100k-test-split.json"
MODEL_PATH = ROOT / "models/streamcover-hpcp-compact.pt"
CACHE = Path.home() / ".cache/streamcover/stage3"
SET_NAMES = ("val", "test", "custom")
QUERY_LENGTHS: tuple[float | None, ...] = (None, 60.0, 30.0)  # None = full length
SEED = 20261203


@dataclass
class Queries:
    """One query per recording: frames ``start:start+length`` and its chunk embeddings."""

    starts: np.ndarray  # int64 [n] first frame of each excerpt
    lengths: np.ndarray  # int64 [n] frames of each excerpt
    vectors: list[np.ndarray]  # [chunks_i, D] float32, unit rows
    chunk_starts: list[np.ndarray]  # [chunks_i] seconds from the excerpt start


def load_set(name: str) -> TrackSet:
    """Recordings of one study set (duplicates dropped)."""
    if name == "custom":
        return load_shs(CUSTOM_PATH).tracks
    return split_tracks(load_shs(SHS_PATH).tracks, read_split(SPLIT_PATH), name)


def excerpt_starts(tracks: TrackSet, seconds: float | None, seed: int = SEED
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded start frame and length of each recording's excerpt (whole track if shorter)."""
    n = np.array([tracks.n_frames(i) for i in range(len(tracks))], dtype=np.int64)
    if seconds is None:
        return np.zeros_like(n), n
    frames = max(1, round(seconds * tracks.frames_per_second))
    rng = np.random.default_rng([seed, round(seconds * 1000)])
    starts = np.array([int(rng.integers(0, k - frames + 1)) if k > frames else 0 for k in n])
    return starts.astype(np.int64), np.minimum(n, frames)


def _model_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def queries(name: str, tracks: TrackSet, seconds: float | None, encoder: object | None = None
            ) -> Queries:
    """Embeddings of the set's excerpts, from the cache or computed (and cached) now."""
    starts, lengths = excerpt_starts(tracks, seconds)
    tag = "full" if seconds is None else f"{seconds:g}s"
    path = CACHE / f"{_model_digest(MODEL_PATH)}-{name}-{tag}-{SEED}.npz"
    if path.is_file():
        with np.load(path) as z:
            off = z["offsets"]
            vec, cst = z["vectors"], z["chunk_starts"]
            if len(off) == len(tracks) + 1 and np.array_equal(z["starts"], starts):
                return Queries(starts, lengths,
                               [vec[a:b] for a, b in itertools.pairwise(off)],
                               [cst[a:b] for a, b in itertools.pairwise(off)])
    if encoder is None:
        from streamcover.model.inference import Encoder

        encoder = Encoder.from_checkpoint(MODEL_PATH, device="cpu")
    vecs, csts = [], []
    for i in range(len(tracks)):
        emb = encoder.embed_features(  # type: ignore[attr-defined]
            tracks.feature(i, int(starts[i]), int(starts[i] + lengths[i])))
        vecs.append(emb.vectors.astype(np.float32))
        csts.append(emb.starts.astype(np.float32))
    CACHE.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in vecs])]).astype(np.int64)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, vectors=np.concatenate(vecs), chunk_starts=np.concatenate(csts),
             offsets=offsets, starts=starts)
    tmp.replace(path)
    return Queries(starts, lengths, vecs, csts)


def main() -> None:
    from streamcover.model.inference import Encoder

    encoder = Encoder.from_checkpoint(MODEL_PATH, device="cpu")
    for name in SET_NAMES:
        tracks = load_set(name)
        for sec in QUERY_LENGTHS:
            q = queries(name, tracks, sec, encoder)
            print(name, sec, len(tracks), sum(len(v) for v in q.vectors), flush=True)


if __name__ == "__main__":
    main()
