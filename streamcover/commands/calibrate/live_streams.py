"""The live streams `streamcover calibrate --live` runs through the monitor's search and live
decisions (:mod:`streamcover.eval.detect_live`): unrelated music played back to back, and
live sets of re-uploaded pieces of the catalogued recordings with uncatalogued music between
some of them. Features come from the :class:`FeatureCache` (the negatives' are the ones the
upload calibration keeps); a stream's features are its recordings' features end to end."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from streamcover.commands.calibrate.streams import (
    _LazyAudio,
    _NegativeFeatures,
    _ReuploadFeatures,
    _rng,
)

if TYPE_CHECKING:
    from streamcover.commands.calibrate.cache import FeatureCache
    from streamcover.commands.calibrate.data import Data
    from streamcover.config import Settings
    from streamcover.eval.detect_live import LiveStream, Piece
    from streamcover.model.inference import Encoder

PIECE_SECONDS = (60.0, 180.0)  # a set's piece: this long (or the whole recording, if shorter)
INTERLUDE_SECONDS = (20.0, 60.0)  # uncatalogued music between two pieces


def _joined(parts: list[tuple[np.ndarray, str | None, str]], fps: float) -> tuple[np.ndarray, tuple[Piece, ...]]:
    from streamcover.eval.detect_live import Piece

    pieces, t = [], 0.0
    for feat, ref, source in parts:
        d = feat.shape[1] / fps
        pieces.append(Piece(ref, t, t + d, source))
        t += d
    return np.concatenate([p[0] for p in parts], axis=1), tuple(pieces)


def make_live_streams(args: argparse.Namespace, encoder: Encoder, settings: Settings, data: Data,
                      cache: FeatureCache, progress: Any) -> Iterator[LiveStream]:
    """The negative streams (``--live-negative-hours`` of the negative recordings in a random
    order, whole, digital silence included, ``--live-stream-hours`` a stream), then the sets
    (``--live-draws`` pieces of every positive recording, ``--live-set-pieces`` a set)."""
    from streamcover.eval.detect_data import draw_reupload
    from streamcover.eval.detect_live import LiveStream, pack, spread

    fe = encoder.frontend
    fps = float(fe.frames_per_second)
    wire = settings.audio.wire_sample_rate
    rate = int(fe.sample_rate)
    rng = _rng(args.seed, "live")
    order = [data.negatives[i] for i in rng.permutation(len(data.negatives))]
    if args.live_negative_hours is not None:
        kept, total = [], 0.0
        for r in order:
            if total >= args.live_negative_hours * 3600:
                break
            kept.append(r)
            total += r.duration_s
        order = kept
    task = progress.add_task("live: negatives", total=len(order), note="")
    neg: list[np.ndarray] = []
    for r in order:
        neg.append(cache.get(["negative", r.sha256, wire], _NegativeFeatures(_LazyAudio(r.path, wire), fe)))
        progress.advance(task)
    for n, group in enumerate(pack([f.shape[1] / fps for f in neg], args.live_stream_hours * 3600)):
        feat, pieces = _joined([(neg[i], None, order[i].ref_id) for i in group], fps)
        yield LiveStream(f"live-negative-{n}", "negative", feat, fps, pieces)
    # Pieces: re-uploads (speed, noise, lossy codec as the upload protocol's) of 60-180 s.
    positives = data.positives[: args.live_max_recordings]
    task = progress.add_task("live: pieces", total=len(positives), note="")
    made: list[tuple[np.ndarray, str]] = []
    for r in positives:
        prng = _rng(args.seed, "live-piece:" + r.sha256)
        source = _LazyAudio(r.path, rate)
        for _ in range(args.live_draws):
            length = round(float(prng.uniform(*PIECE_SECONDS)), 1)
            spec = draw_reupload(prng, r.duration_s, length)
            made.append((cache.get(["live-piece", r.sha256, spec.key(), wire],
                                   _ReuploadFeatures(source, spec, wire, fe)), r.ref_id))
        progress.advance(task)
    srng = _rng(args.seed, "live-sets")
    order_p = spread([ref for _, ref in made], srng)
    for n in range(0, len(order_p), args.live_set_pieces):
        parts: list[tuple[np.ndarray, str | None, str]] = []
        for j, i in enumerate(order_p[n : n + args.live_set_pieces]):
            if j and neg and srng.uniform() < args.live_interludes:
                k = int(srng.integers(len(neg)))
                want = round(float(srng.uniform(*INTERLUDE_SECONDS)) * fps)
                a = int(srng.integers(0, max(1, neg[k].shape[1] - want)))
                parts.append((neg[k][:, a : a + want], None, order[k].ref_id))
            parts.append((made[i][0], made[i][1], made[i][1]))
        feat, pieces = _joined(parts, fps)
        yield LiveStream(f"live-set-{n // args.live_set_pieces}", "set", feat, fps, pieces)
