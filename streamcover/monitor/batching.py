"""The two calls the pipeline makes across all streams at once: front end and encoder.

One batched call costs far less than one per stream. A batch that raises is retried
member by member, so only a stream that fails on its own is ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from streamcover.audio.frontend import FeatureStream, push_many
from streamcover.monitor.engine import Engine
from streamcover.monitor.metrics import Metrics
from streamcover.monitor.profile import StageProfile
from streamcover.monitor.stream import Job, StreamRuntime

_NO_PROFILE = StageProfile()

# (stream, batch position of its newest record, phase, exception): the caller ends the stream
FeatureFault = Callable[[StreamRuntime, int, str, Exception], None]


def sync_features(streams: Iterable[StreamRuntime], jobs: list[Job], fault: FeatureFault,
                  profile: StageProfile | None = None) -> None:
    """Features of every stream with pending audio in one batched front-end call
    (``push_many``: one FFT/peak-picking pass over the frames of all streams). If the
    batch raises, each stream is retried alone from its state before the batch.
    ``profile`` times the front end ("hpcp") and the windowing (benchmark only)."""
    prof = profile or _NO_PROFILE
    due: list[StreamRuntime] = []
    blocks: list[np.ndarray] = []
    for rt in streams:
        block = rt.take_pending()
        if block is not None:
            due.append(rt)
            blocks.append(block)
    if not due:
        return
    snaps = [_snapshot(rt.fstream) for rt in due]
    last = [rt.pending[-1][3] for rt in due]  # the newest record of each stream's audio
    new: list[np.ndarray | None]
    try:
        with prof.stage("hpcp"):
            new = list(_features(due, blocks))
    except Exception:
        new = []
        for rt, block, snap, order in zip(due, blocks, snaps, last, strict=True):
            _restore_snapshot(rt.fstream, snap)
            try:
                new.append(_features([rt], [block])[0])
            except Exception as exc:
                _restore_snapshot(rt.fstream, snap)
                new.append(None)
                fault(rt, order, "features", exc)
    for rt, feats, order in zip(due, new, last, strict=True):
        if feats is None:
            continue
        try:
            with prof.stage("windowing"):
                rt.absorb(np.asarray(feats, dtype=np.float32), jobs)
        except Exception as exc:
            fault(rt, order, "windows", exc)


def embed(jobs: list[Job], engine: Engine, metrics: Metrics,
          batch_size: int) -> tuple[dict[int, np.ndarray], dict[int, Exception]]:
    """Embeddings of the window jobs, batched across streams by chunk length; a batch
    that raises is retried job by job, and the jobs that still fail are returned."""
    vectors: dict[int, np.ndarray] = {}
    failed: dict[int, Exception] = {}
    by_len: dict[int, list[int]] = {}
    for i, j in enumerate(jobs):
        if j.chunk is not None:
            by_len.setdefault(j.chunk.shape[1], []).append(i)
    for ids in by_len.values():
        for b in range(0, len(ids), batch_size):
            part = ids[b : b + batch_size]
            try:
                emb = _embed_batch([jobs[i] for i in part], engine, metrics)
            except Exception:
                for i in part:
                    try:
                        vectors[i] = _embed_batch([jobs[i]], engine, metrics)[0]
                    except Exception as exc:
                        failed[i] = exc
                continue
            for i, v in zip(part, emb, strict=True):
                vectors[i] = v
    return vectors, failed


def _embed_batch(part: list[Job], engine: Engine, metrics: Metrics) -> np.ndarray:
    batch = np.stack([j.chunk for j in part])  # type: ignore[misc]
    t0 = time.perf_counter()
    with metrics.profile.stage("encoder"):
        emb = np.asarray(engine.encoder.embed_chunks(batch), dtype=np.float32)
    metrics.embed_latency.observe(time.perf_counter() - t0)
    metrics.batch_size.observe(len(part))
    if emb.shape[0] != len(part) or not np.isfinite(emb).all():
        raise ValueError(f"encoder returned {emb.shape} / non-finite values for {len(part)} windows")
    return emb


def _features(due: Sequence[StreamRuntime], blocks: Sequence[np.ndarray]) -> list[np.ndarray]:
    if all(isinstance(rt.fstream, FeatureStream) for rt in due):
        return push_many([rt.fstream for rt in due], blocks)
    return [rt.fstream.push(b) for rt, b in zip(due, blocks, strict=True)]  # no batched path


def _snapshot(obj: Any) -> dict[str, Any]:
    """The attributes of a feature stream, with its buffers copied, so that a failed
    batched push can be undone and the stream retried on its own."""
    return {k: (v.copy() if isinstance(v, np.ndarray | list) else v) for k, v in vars(obj).items()}


def _restore_snapshot(obj: Any, snap: dict[str, Any]) -> None:
    state = vars(obj)
    state.clear()
    state.update({k: (v.copy() if isinstance(v, np.ndarray | list) else v) for k, v in snap.items()})
