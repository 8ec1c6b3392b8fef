"""Users' datasets: a manifest of recordings and the work each is a version of.

Format (CSV with a header row, or JSON Lines with one object per line; chosen by the
``.csv`` / ``.jsonl`` suffix):

=========  ========  =============================================================
column     required  meaning
=========  ========  =============================================================
work       yes       work (clique) id; versions of one work share it (any string)
path       yes       audio file; relative paths resolve against the manifest's folder
title      no        free text, kept for reports
artist     no        free text, kept for reports
start      no        seconds into the file where the recording starts (default 0)
end        no        seconds where it ends (default: end of file)
=========  ========  =============================================================

Features are computed with ``streamcover.audio.frontend`` (the same front-end the
monitor uses) and cached as float16 ``.npy`` under ``~/.cache/streamcover/features``,
keyed by the file's path, size and mtime, the segment and the front-end.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamcover.data.tracks import TrackSet
from streamcover.files import atomic_path
from streamcover.log import get_logger
from streamcover.manifests import ManifestError, read_manifest_rows

if TYPE_CHECKING:
    from streamcover.audio.frontend import FrontEnd
    from streamcover.config import Settings

log = get_logger(__name__)

REQUIRED = ("work", "path")
OPTIONAL = ("title", "artist", "start", "end")


@dataclass(frozen=True)
class ManifestEntry:
    work: str
    path: Path
    title: str = ""
    artist: str = ""
    start: float = 0.0
    end: float | None = None
    line: int = 0


def _entry(row: dict[str, Any], base: Path, where: str, line: int) -> ManifestEntry:
    missing = [k for k in REQUIRED if not str(row.get(k) or "").strip()]
    if missing:
        raise ManifestError(f"{where}:{line}: missing {', '.join(missing)}")
    unknown = set(row) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise ManifestError(f"{where}:{line}: unknown columns {sorted(unknown)}")

    def seconds(key: str) -> float | None:
        raw = row.get(key)
        if raw is None or str(raw).strip() == "":
            return None
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ManifestError(f"{where}:{line}: {key} must be seconds, got {raw!r}") from None
        if not np.isfinite(value) or value < 0:
            raise ManifestError(f"{where}:{line}: {key} must be >= 0 seconds, got {raw!r}")
        return value

    start = seconds("start") or 0.0
    end = seconds("end")
    if end is not None and end <= start:
        raise ManifestError(f"{where}:{line}: end ({end}) must be after start ({start})")
    path = Path(str(row["path"]).strip())
    if not path.is_absolute():
        path = base / path
    return ManifestEntry(work=str(row["work"]).strip(), path=path,
                         title=str(row.get("title") or ""), artist=str(row.get("artist") or ""),
                         start=start, end=end, line=line)


def read_manifest(path: Path) -> list[ManifestEntry]:
    """Parse a CSV or JSONL manifest; every malformed line is an error naming the line."""
    path = Path(path)
    base = path.resolve().parent
    entries = [_entry(row, base, str(path), line) for line, row in read_manifest_rows(path)]
    if not entries:
        raise ManifestError(f"{path}: no recordings")
    return entries


def feature_cache_key(entry: ManifestEntry, frontend: FrontEnd) -> str:
    """Changes whenever the audio file, the segment or the front-end changes."""
    st = entry.path.stat()
    ident = json.dumps([str(entry.path.resolve()), st.st_size, st.st_mtime_ns, entry.start,
                        entry.end, frontend.name, frontend.sample_rate, frontend.n_bins,
                        frontend.hop, frontend.pool])
    return hashlib.sha1(ident.encode()).hexdigest()


def compute_features(entry: ManifestEntry, frontend: FrontEnd, cache_dir: Path | None) -> np.ndarray:
    """Features ``[bins, T]`` (float16) of one entry, from the cache when possible."""
    from streamcover.audio.decode import load_audio

    if not entry.path.is_file():
        raise FileNotFoundError(f"manifest line {entry.line}: audio file {entry.path} not found")
    cached: Path | None = None
    if cache_dir is not None:
        cached = cache_dir / frontend.name / f"{feature_cache_key(entry, frontend)}.npy"
        if cached.is_file():
            try:
                return np.load(cached)
            except (OSError, ValueError, EOFError) as exc:
                # Unreadable (e.g. a disk fault): recompute and replace it, never trust it.
                log.warning("feature cache entry unreadable; recomputing", path=str(cached),
                            error=str(exc))
    wave = load_audio(entry.path, frontend.sample_rate,
                      max_seconds=entry.end if entry.end is not None else None)
    wave = wave[round(entry.start * frontend.sample_rate):]
    feat = np.asarray(frontend.features(wave), dtype=np.float16)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # A private temporary name: processes that compute the same entry at once (two
        # evaluations sharing a cache) each rename a whole file; the last one wins.
        with atomic_path(cached) as tmp, tmp.open("wb") as fh:
            np.save(fh, feat)
    return feat


def manifest_tracks(entries: Iterable[ManifestEntry], frontend_name: str,
                    settings: Settings | None = None, cache_dir: Path | None = None) -> TrackSet:
    """Compute (or load cached) features for every entry; undecodable files are skipped
    with a warning naming them, and an error if nothing is left."""
    from streamcover.audio.decode import AudioDecodeError
    from streamcover.audio.frontend import make_frontend
    from streamcover.config import FrontEndSettings, get_settings

    settings = settings or get_settings()
    fe_settings = FrontEndSettings.model_validate(
        {"name": frontend_name, "cqt_pool": settings.frontend.cqt_pool})
    frontend = make_frontend(fe_settings)
    cache = cache_dir if cache_dir is not None else settings.cache_dir / "features"
    feats: list[np.ndarray] = []
    works: list[str] = []
    ids: list[str] = []
    titles: list[str] = []
    skipped = 0
    entries = list(entries)
    for e in entries:
        try:
            f = compute_features(e, frontend, cache)
        except (AudioDecodeError, FileNotFoundError) as exc:
            log.warning("manifest entry skipped", line=e.line, path=str(e.path), reason=str(exc))
            skipped += 1
            continue
        feats.append(f)
        works.append(e.work)
        ids.append(f"{e.path.name}@{e.start:g}")
        titles.append(e.title)
    if not feats:
        raise ManifestError(f"none of the {len(entries)} manifest recordings could be decoded")
    if skipped:
        log.warning("manifest entries skipped", skipped=skipped, kept=len(feats))
    _, work_ids = np.unique(np.asarray(works), return_inverse=True)
    return TrackSet(features=feats, works=work_ids, track_ids=ids,
                    frames_per_second=frontend.frames_per_second, titles=titles)
