"""The query streams `streamcover calibrate` runs through the monitor's search and upload
decisions: re-uploads of the catalogued Debian recordings, real covers and unrelated music,
their front-end features made once and kept in the :class:`FeatureCache`."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streamcover.commands.calibrate.cache import FeatureCache
    from streamcover.commands.calibrate.data import Data
    from streamcover.config import Settings
    from streamcover.eval.detect import QueryStream
    from streamcover.model.inference import Encoder


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
class _NegativeClipFeatures:
    """A short upload of unrelated music: ``length`` s from ``start`` of the wire-rate audio."""

    source: _LazyAudio
    start: float
    length: float
    frontend: Any

    def __call__(self) -> np.ndarray:
        from streamcover.eval.detect_data import monitor_features

        rate = self.source.rate
        a = round(self.start * rate)
        return monitor_features(self.source.wave()[a : a + round(self.length * rate)], rate, self.frontend)


@dataclasses.dataclass
class _NegativeFeatures:
    """A whole unrelated recording at the wire rate (the same decode its clips cut from)."""

    source: _LazyAudio
    frontend: Any

    def __call__(self) -> np.ndarray:
        from streamcover.eval.detect_data import monitor_features

        return monitor_features(self.source.wave(), self.source.rate, self.frontend)


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
    # Unrelated music: whole recordings of other packages, through the wire-rate path, and
    # short uploads of them (10, 30 and 60 s from a random start, as the re-uploads), since a
    # short clip is one short chunk and scores by chance differently from a long stream.
    task = progress.add_task("negatives", total=len(data.negatives), note="")
    for r in data.negatives:
        source = _LazyAudio(r.path, wire)  # decoded once, for the whole and its clips
        feat = cache.get(["negative", r.sha256, wire], _NegativeFeatures(source, fe))
        yield QueryStream(f"{r.ref_id}#full", "negative", r.package, "full", None, feat, fps)
        rng = _rng(args.seed, "negative:" + r.sha256)
        for i, clip_s in enumerate(L for L in (10.0, 30.0, 60.0) for _ in range(args.draws)):
            if r.duration_s < clip_s + 1.0:
                continue
            start = float(rng.uniform(0.0, r.duration_s - clip_s))
            clip = cache.get(["negative-clip", r.sha256, round(start, 3), clip_s, wire],
                             _NegativeClipFeatures(source, start, clip_s, fe))
            yield QueryStream(f"{r.ref_id}#{int(clip_s)}-{i}", "negative", r.package, str(int(clip_s)),
                              None, clip, fps)
        progress.advance(task)
