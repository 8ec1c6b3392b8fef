"""One stream's runtime inside the monitor: buffers, feature stream, windows, checkpoint.

:class:`StreamRuntime` turns a stream's in-order audio into feature frames and cuts them into
windows (:class:`Job`) with the windowing rules of ``streamcover.audio.chunking``, so that a
file embedded offline and the same audio streamed give the same chunks. It restores itself
from, and writes, the :class:`~streamcover.events.StreamState` checkpoint. The pipeline
(``streamcover.monitor.pipeline``) runs the jobs of all streams in batches.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamcover.audio.chunking import ChunkGeometry, normalize_chunks
from streamcover.audio.resample import StreamResampler
from streamcover.catalog.view import Stage1Memo
from streamcover.config import Settings
from streamcover.events import StreamState
from streamcover.match.align import N_BINS
from streamcover.match.decision import StreamMatcher
from streamcover.match.sequence import Sequencer
from streamcover.match.verify import quantise_features
from streamcover.monitor.engine import Engine

LAST = 1 << 62  # job order after every record of a batch (evictions)


@dataclass
class AudioBlock:
    """A block of one stream's audio, waiting in its sequencer."""

    samples: np.ndarray  # mono float32 at the stream's rate
    offset: int
    closed_at: float  # wall clock when this audio was sent (window-close reference)
    eos: bool
    order: int = 0  # batch position of its record (a fault is dead-lettered with it)


@dataclass
class Job:
    """A window to embed and decide, or an end of stream to finish (``chunk is None``)."""

    stream: StreamRuntime
    index: int
    start: float
    end: float
    chunk: np.ndarray | None
    closed_at: float
    finish_at: float | None = None
    # Position in the batch of the record that completed it: jobs run in this order, as
    # if every record had been transformed on arrival (features are computed per batch).
    order: int = 0


class StreamRuntime:
    """Buffers, feature stream and decision state of one stream."""

    def __init__(self, stream_id: str, source: Any, partition: int, sample_rate: int,
                 settings: Settings, engine: Engine, first_seq: int, first_sample: int,
                 first_offset: int, title: str | None) -> None:
        self.stream_id = stream_id
        self.source = source
        self.partition = partition
        self.sample_rate = sample_rate
        self.settings = settings
        self.engine = engine
        self.title = title
        fps = float(engine.frontend.frames_per_second)
        self.fps = fps
        # The windowing rules of streamcover.audio.chunking, so that a file embedded offline
        # (identify, catalog add) and the same audio streamed give the same chunks.
        geo = ChunkGeometry.make(fps, settings.audio.window_seconds, settings.audio.hop_seconds,
                                 settings.audio.min_clip_seconds)
        self.win_f, self.hop_f, self.min_f = geo.window, geo.hop, geo.min_frames
        # Stage 3 aligns an upload's features from its start (quantised like the catalog's,
        # at most verify.max_query_seconds of them); live decisions do not use stage 3.
        verify = settings.verify
        self.query_cap = (max(1, round(verify.max_query_seconds * fps))
                          if verify.enabled and source == "upload"
                          and int(engine.frontend.n_bins) == N_BINS else 0)
        self.query_blocks: list[np.ndarray] = []  # uint8 [bins, n] blocks
        self.query_frames = 0
        gap_s = settings.audio.max_gap_seconds
        self.seq: Sequencer[AudioBlock] = Sequencer(
            max_gap_frames=min(settings.monitor.max_gap_frames,
                               int(gap_s / settings.audio.frame_seconds + 1e-9)),
            reorder_frames=settings.monitor.reorder_frames,
            next_seq=first_seq, next_sample=first_sample,
            max_gap_samples=int(gap_s * sample_rate),
        )
        self.matcher = StreamMatcher(stream_id, source, settings.match,
                                     settings.audio.window_seconds, settings.audio.hop_seconds)
        self.embeddings: dict[int, np.ndarray] = {}
        self.chunk_start: dict[int, float] = {}
        # Stage-1 neighbours of this stream's chunks by window index (indices only grow), so
        # each window searches the catalog graph for its new chunk only.
        self.stage1_memo = Stage1Memo()
        self.next_window = 0
        self.finished = False
        self.low_water = first_offset
        self.recent: deque[tuple[int, int, int, int]] = deque(maxlen=64)  # offset, seq, start, n
        self.last_active = time.monotonic()
        self.skip_until = first_sample
        self.discard = 0  # feature frames to drop after a restore (see resume_point)
        self.failed = False  # closed by a fault: checkpointed as finished, later frames dropped
        self.last_offset = first_offset  # newest record of this stream seen
        self._new_epoch(first_sample)

    # ---- epochs: a fresh feature grid (start, or after a large gap) ----------------------
    def _new_epoch(self, origin_sample: int, frames_done: int = 0,
                   tail: np.ndarray | None = None, win_start: int | None = None,
                   epoch_first: int | None = None, epoch_windows: int = 0, last_end: int = 0) -> None:
        self.grid_origin = origin_sample
        self.frames_done = frames_done
        self.resampler = StreamResampler(self.sample_rate, int(self.engine.frontend.sample_rate))
        self.fstream = self.engine.frontend.stream()
        bins = int(self.engine.frontend.n_bins)
        self.feats = tail if tail is not None else np.zeros((bins, 0), dtype=np.float32)
        # Audio resampled but not yet turned into features (see ``feed``/``sync``): blocks
        # with their window-close time, the ``frames_emitted`` count each one completes and
        # the batch position of their record.
        self.pending: list[tuple[np.ndarray, float, int, int]] = []
        self.pending_samples = 0
        self.win_start = win_start if win_start is not None else frames_done
        self.epoch_first = epoch_first if epoch_first is not None else frames_done
        self.epoch_windows = epoch_windows
        self.last_end = last_end

    @property
    def hop_stream(self) -> float:
        """Stream-rate samples per feature frame."""
        return self.engine.hop_samples * self.sample_rate / float(self.engine.frontend.sample_rate)

    def frame_time(self, frame: int) -> float:
        return self.grid_origin / self.sample_rate + frame / self.fps

    def resume_point(self) -> int:
        """Where re-reading must start after a restore, so features continue *exactly*: one
        feature frame before the next one due. The fresh feature stream's first frame (no
        left context, resampler warming up) is discarded; the frames after it see only
        real samples, so they equal those of an uninterrupted run."""
        back = 1 if self.frames_done >= 1 else 0
        return round(self.grid_origin + (self.frames_done - back) * self.hop_stream)

    # ---- audio in --------------------------------------------------------------------------
    def feed(self, audio: np.ndarray, start_sample: int, closed_at: float, order: int = 0) -> None:
        """Take a block of in-order audio: resample it now, compute its features later.

        Features are computed by ``sync`` (this stream alone) or by the pipeline for all
        streams at once at the end of a batch (``Pipeline._sync_features``); either way
        each window gets the close time of the block that completed it, as if every block
        had been transformed on arrival.
        """
        if start_sample < self.skip_until:
            cut = self.skip_until - start_sample
            audio = audio[cut:]
        if audio.size == 0:
            return
        res = self.resampler.push(audio)
        if res.size == 0:
            return
        self.pending_samples += int(res.size)
        self.pending.append((res, closed_at, int(self.fstream.frames_after(self.pending_samples)), order))

    def take_pending(self) -> np.ndarray | None:
        """The pending audio as one block (None if there is none); it stays pending until
        ``absorb`` is given its features."""
        if not self.pending:
            return None
        if len(self.pending) == 1:
            return self.pending[0][0]
        return np.concatenate([b for b, _, _, _ in self.pending])

    def absorb(self, new: np.ndarray, jobs: list[Job]) -> None:
        """Features [bins, n] of ``fstream.push(take_pending())``: split them back over the
        pending blocks and cut the windows each block completed."""
        pending, self.pending, self.pending_samples = self.pending, [], 0
        base = int(self.fstream.frames_emitted) - new.shape[1]
        pos = 0
        for _block, closed_at, upto, order in pending:
            end = max(pos, upto - base)
            self._take(new[:, pos:end], closed_at, order, jobs)
            pos = end
        if pos != new.shape[1]:
            raise RuntimeError(f"stream {self.stream_id}: {new.shape[1]} feature frames for "
                               f"pending audio that completes {pos}")

    def sync(self, jobs: list[Job]) -> None:
        """Compute this stream's pending features now (before a finish, gap or set list)."""
        x = self.take_pending()
        if x is not None:
            self.absorb(np.asarray(self.fstream.push(x), dtype=np.float32), jobs)

    def _take(self, new: np.ndarray, closed_at: float, order: int, jobs: list[Job]) -> None:
        if self.discard and new.ndim == 2 and new.shape[1]:
            drop = min(self.discard, new.shape[1])
            new = new[:, drop:]
            self.discard -= drop
        if new.ndim == 2 and new.shape[1]:
            self.feats = np.concatenate([self.feats, new], axis=1) if self.feats.size else new
            self.frames_done += new.shape[1]
            self._keep_query(new)
        self._cut(closed_at, order, jobs)

    def _keep_query(self, new: np.ndarray) -> None:
        room = self.query_cap - self.query_frames
        if room > 0:
            block = quantise_features(new[:, :room])
            self.query_blocks.append(block)
            self.query_frames += block.shape[1]

    def query_features(self) -> np.ndarray | None:
        """The stream's features from its start for stage 3 (uint8 [bins, T]), or None."""
        if not self.query_frames:
            return None
        if len(self.query_blocks) > 1:
            self.query_blocks = [np.concatenate(self.query_blocks, axis=1)]
        return self.query_blocks[0]

    def _cut(self, closed_at: float, order: int, jobs: list[Job]) -> None:
        buf0 = self.frames_done - self.feats.shape[1]  # grid frame of feats[:, 0]
        while self.frames_done >= self.win_start + self.win_f:
            lo = self.win_start - buf0
            chunk = normalize_chunks(self.feats[None, :, lo : lo + self.win_f].copy())[0]
            start = self.frame_time(self.win_start)
            jobs.append(Job(self, self.next_window, start, start + self.win_f / self.fps, chunk, closed_at,
                             order=order))
            self.next_window += 1
            self.epoch_windows += 1
            self.last_end = self.win_start + self.win_f
            self.win_start += self.hop_f
        # keep the next window's frames, and the last W frames (an end-aligned tail window)
        keep_from = min(self.win_start, self.frames_done - self.win_f) - buf0
        if keep_from > 0:
            self.feats = self.feats[:, keep_from:]

    def discontinuity(self, origin_sample: int, jobs: list[Job]) -> None:
        self.sync(jobs)  # the old epoch's audio ends where the gap starts
        self._new_epoch(origin_sample)
        self.skip_until = origin_sample
        self.discard = 0

    def finish(self, closed_at: float, jobs: list[Job], order: int = LAST) -> None:
        """End of stream, with the chunking rules of ``streamcover.audio.chunking``: an
        end-aligned tail window if ≥ ``min_s`` is uncovered; a clip shorter than one window
        but ≥ ``min_s`` is one short chunk (so every such upload gets one window)."""
        self.sync(jobs)
        epoch_frames = self.frames_done - self.epoch_first
        avail = self.feats.shape[1]
        chunk: np.ndarray | None = None
        first = self.frames_done
        if self.epoch_windows == 0 and epoch_frames >= self.min_f and avail:
            n = min(avail, epoch_frames)
            first = self.frames_done - n
            chunk = self.feats[:, avail - n :]
        elif self.epoch_windows and self.frames_done - self.last_end >= self.min_f and avail >= self.win_f:
            first = self.frames_done - self.win_f
            chunk = self.feats[:, avail - self.win_f :]
        if chunk is not None:
            chunk = normalize_chunks(chunk[None].copy())[0]
            start = self.frame_time(first)
            jobs.append(Job(self, self.next_window, start, start + chunk.shape[1] / self.fps,
                             chunk, closed_at, order=order))
            self.next_window += 1
        end = max(self.frame_time(self.frames_done), self.seq.next_sample / self.sample_rate)
        jobs.append(Job(self, self.next_window, end, end, None, closed_at, finish_at=end, order=order))
        self.finished = True

    # ---- checkpoint --------------------------------------------------------------------------
    def checkpoint(self, model_id: str, catalog_version: str) -> StreamState:
        """State as of now; also moves the replay point (``low_water``) forward."""
        point = self.resume_point()
        resume = None
        for off, seq, start, n in reversed(self.recent):
            if start <= point < start + max(n, 1):
                resume = (off, seq, start)
                break
        if resume is None:
            # Nothing buffered holds the point: resume with the next frame to come.
            last = self.recent[-1] if self.recent else None
            nxt = (last[0] + 1) if last else self.low_water
            resume = (nxt, self.seq.next_seq, self.seq.next_sample)
        if self.finished:  # past every record of it seen (also dropped ones): see Pipeline._close
            after = self.recent[-1][0] + 1 if self.recent else self.low_water
            resume = (max(after, self.last_offset + 1), self.seq.next_seq, self.seq.next_sample)
        self.low_water = resume[0]
        idx = sorted(self.embeddings)
        dim = int(next(iter(self.embeddings.values())).shape[0]) if self.embeddings else 0
        emb = (np.stack([self.embeddings[i] for i in idx]).astype("<f2").tobytes() if idx else b"")
        bins = int(self.feats.shape[0])
        tuning_phase, tuning_recent = self.fstream.tuning_state()
        return StreamState(
            stream_id=self.stream_id, source=self.source, title=self.title,
            finished=self.finished, sample_rate=self.sample_rate,
            resume_seq=resume[1], resume_sample=resume[2], resume_offset=resume[0],
            grid_origin_sample=self.grid_origin, frames_done=self.frames_done,
            win_start=self.win_start, epoch_windows=self.epoch_windows, last_end=self.last_end,
            next_window=self.next_window, feature_bins=bins,
            feature_tail=self.feats.astype("<f4").tobytes(), embed_dim=dim,
            chunk_index=idx, chunk_start=[self.chunk_start[i] for i in idx], embeddings=emb,
            matcher=self.matcher.to_state(), model_id=model_id, catalog_version=catalog_version,
            updated_at=time.time(), query_features=self._query_bytes(),
            tuning_phase=tuning_phase, tuning_recent=tuning_recent,
        )

    def _query_bytes(self) -> bytes:
        q = self.query_features()
        return b"" if q is None or self.finished else q.tobytes()

    @classmethod
    def restore(cls, st: StreamState, partition: int, settings: Settings, engine: Engine) -> StreamRuntime:
        rt = cls(st.stream_id, st.source, partition, st.sample_rate, settings, engine,
                 st.resume_seq, st.resume_sample, st.resume_offset, st.title)
        rt.last_offset = st.resume_offset - 1  # nothing of it read yet in this incarnation
        tail = st.feature_matrix()
        if tail.size == 0:
            tail = np.zeros((int(engine.frontend.n_bins), 0), dtype=np.float32)
        rt._new_epoch(st.grid_origin_sample, st.frames_done, tail, st.win_start, 0,
                      st.epoch_windows, st.last_end)
        rt.skip_until = rt.resume_point()
        rt.discard = 1 if st.frames_done >= 1 else 0
        # The discarded frame is recomputed, not new: the fold folds it without counting it.
        rt.fstream.restore_tuning(st.tuning_phase, st.tuning_recent, hold=rt.discard)
        # If the resume point lies in a silence-filled hole, the hole is filled again.
        rt.seq.next_sample = min(st.resume_sample, rt.skip_until)
        rt.next_window = st.next_window
        vecs = st.embedding_matrix()
        for i, (ci, cs) in enumerate(zip(st.chunk_index, st.chunk_start, strict=True)):
            rt.embeddings[ci] = vecs[i]
            rt.chunk_start[ci] = cs
        rt.matcher = StreamMatcher.from_state(st.matcher, st.stream_id, st.source, settings.match,
                                              settings.audio.window_seconds, settings.audio.hop_seconds)
        rt.finished = st.finished
        if rt.query_cap and st.query_features and st.feature_bins:
            q = np.frombuffer(st.query_features, np.uint8).reshape(st.feature_bins, -1)
            rt.query_blocks = [q[:, : rt.query_cap].copy()]
            rt.query_frames = rt.query_blocks[0].shape[1]
        return rt
