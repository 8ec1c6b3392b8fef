"""SHS100K-TEST HPCP features (../shared/data) as a TrackSet, and the by-work split.

The file is read in place at training time and never copied into the project.
Format (see the data README): ``feat`` uint8 [frames, 12] (value = feat/255),
``offsets`` int64 [recordings+1], ``clique`` int32 (work id), ``version`` int32.
HPCP runs at 44100/1024/20 = 2.1533 frames/s, so a 20 s chunk is 43 frames.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamcover.data.tracks import TrackSet

SHS_FRAMES_PER_SECOND = 44_100 / 1024 / 20
DEFAULT_SHS_PATH = Path("/work/shared/data/shs100k_test_hpcp_u8.npz")
SPLIT_NAMES = ("train", "val", "test")

__all__ = ["DEFAULT_SHS_PATH", "SHS_FRAMES_PER_SECOND", "SPLIT_NAMES", "ShsData",
           "ShsFormatError", "load_shs", "make_split", "read_split", "split_tracks",
           "write_split"]


class ShsFormatError(ValueError):
    """The HPCP npz file is missing arrays or has inconsistent shapes."""


@dataclass
class ShsData:
    """All recordings of the npz (after dropping duplicates) plus what was dropped."""

    tracks: TrackSet
    # (clique, version) of recordings dropped as byte-identical duplicates within their work.
    dropped: list[tuple[int, int]]


def load_shs(path: Path = DEFAULT_SHS_PATH, drop_duplicates: bool = True,
             limit_works: int | None = None) -> ShsData:
    """Load the npz into memory as uint8 views (about 50 MB).

    ``limit_works`` keeps only the first N works (by id), for tests.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SHS HPCP file not found: {path}")
    try:
        with np.load(path) as z:
            missing = {"feat", "offsets", "clique", "version"} - set(z.files)
            if missing:
                raise ShsFormatError(f"{path}: missing arrays {sorted(missing)}")
            clique = z["clique"].astype(np.int64)
            version = z["version"].astype(np.int64)
            offsets = z["offsets"].astype(np.int64)
            n_keep = len(clique)
            if limit_works is not None:
                works = np.unique(clique)[:limit_works]
                n_keep = int(np.flatnonzero(np.isin(clique, works))[-1]) + 1
                if not np.all(np.isin(clique[:n_keep], works)):
                    raise ShsFormatError(f"{path}: rows are not sorted by clique")
            feat = z["feat"][: offsets[n_keep]] if limit_works is not None else z["feat"]
    except (OSError, ValueError) as exc:
        if isinstance(exc, ShsFormatError):
            raise
        raise ShsFormatError(f"{path}: cannot read as npz: {exc}") from exc
    clique, version = clique[:n_keep], version[:n_keep]
    offsets = offsets[: n_keep + 1]
    if feat.ndim != 2 or feat.shape[1] != 12 or feat.dtype != np.uint8:
        raise ShsFormatError(f"{path}: feat must be uint8 [frames, 12], got {feat.dtype} {feat.shape}")
    if len(offsets) != len(clique) + 1 or offsets[-1] > len(feat) or np.any(np.diff(offsets) <= 0):
        raise ShsFormatError(f"{path}: offsets do not match {len(clique)} recordings")

    keep: list[int] = []
    dropped: list[tuple[int, int]] = []
    seen: set[tuple[int, bytes]] = set()
    for i in range(len(clique)):
        rec = feat[offsets[i] : offsets[i + 1]]
        if drop_duplicates:
            key = (int(clique[i]), hashlib.sha1(rec.tobytes()).digest())
            if key in seen:
                dropped.append((int(clique[i]), int(version[i])))
                continue
            seen.add(key)
        keep.append(i)
    tracks = TrackSet(
        features=[feat[offsets[i] : offsets[i + 1]] for i in keep],
        works=clique[keep],
        track_ids=[f"shs-{clique[i]}-{version[i]}" for i in keep],
        frames_per_second=SHS_FRAMES_PER_SECOND,
        scale=1.0 / 255.0,
        time_major=True,
    )
    return ShsData(tracks=tracks, dropped=dropped)


def make_split(works: np.ndarray, seed: int, val_fraction: float = 0.1,
               test_fraction: float = 0.1) -> dict[str, list[int]]:
    """Assign whole works to train/val/test with a seeded shuffle (no work in two parts)."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError("split fractions must be >= 0 and sum to less than 1")
    uniq = np.unique(np.asarray(works, dtype=np.int64))
    order = np.random.default_rng(seed).permutation(len(uniq))
    shuffled = uniq[order]
    n_test = round(len(uniq) * test_fraction)
    n_val = round(len(uniq) * val_fraction)
    return {
        "test": sorted(int(w) for w in shuffled[:n_test]),
        "val": sorted(int(w) for w in shuffled[n_test : n_test + n_val]),
        "train": sorted(int(w) for w in shuffled[n_test + n_val :]),
    }


def write_split(path: Path, split: dict[str, list[int]], *, seed: int, source: str,
                dropped: list[tuple[int, int]], tracks: TrackSet) -> None:
    """Write the split as JSON: work ids per part, counts and dropped duplicates (ids only)."""
    counts = {
        name: {"works": len(split[name]),
               "recordings": int(np.isin(tracks.works, split[name]).sum())}
        for name in SPLIT_NAMES
    }
    doc = {
        "source": source,
        "seed": seed,
        "unit": "work (SHS clique id)",
        "counts": counts,
        "dropped_duplicates": [list(d) for d in dropped],
        **{name: split[name] for name in SPLIT_NAMES},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # One line per key keeps the file short and diffable.
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items())
    path.write_text("{\n" + body + "\n}\n", encoding="utf-8")


def read_split(path: Path) -> dict[str, list[int]]:
    """Read a split file written by ``write_split``; checks the parts are disjoint."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read split file {path}: {exc}") from exc
    try:
        split = {name: [int(w) for w in doc[name]] for name in SPLIT_NAMES}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"split file {path} needs integer lists 'train', 'val', 'test'") from exc
    seen: set[int] = set()
    for name in SPLIT_NAMES:
        overlap = seen & set(split[name])
        if overlap:
            raise ValueError(f"split file {path}: works {sorted(overlap)[:5]} are in two parts")
        seen |= set(split[name])
    return split


def split_tracks(tracks: TrackSet, split: dict[str, list[int]], part: str) -> TrackSet:
    """The recordings of one part of a split."""
    if part not in split:
        raise ValueError(f"unknown split part {part!r}; expected one of {SPLIT_NAMES}")
    return tracks.select_works(split[part])
