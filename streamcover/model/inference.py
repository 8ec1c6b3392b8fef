"""The encoder as every consumer uses it: audio or feature chunks in, unit 512-d vectors out.

``Encoder`` owns one trained :class:`CoverEncoder` (or an untrained one for tests and
baselines), its front-end, the device, thread and precision choices, and an inference
copy with BatchNorm folded in (``optimize.py``). TorchScript freezing is not used: it
gained <= 10% here, costs seconds per new input shape and is deprecated. Chunks are grouped by length T and run in batches of
``settings.encoder.batch_size``, so many streams' chunks can share one call.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from streamcover.config import Settings, get_settings
from streamcover.device import autocast, configure_threads, select_device, to_channels_last
from streamcover.model.checkpoint import load_checkpoint, make_model_id, weights_sha256
from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder
from streamcover.model.optimize import fold_for_inference

if TYPE_CHECKING:
    from streamcover.audio.frontend import FrontEnd

log = logging.getLogger(__name__)

ChunkInput = np.ndarray | Sequence[np.ndarray]


@dataclass(frozen=True)
class Embedding:
    """Chunk vectors [N, D] float32, L2-normalised, and chunk start times [N] in seconds.

    N is 0 for audio shorter than ``settings.audio.min_clip_seconds``. ``features`` is the
    front end's whole sequence [bins, T] the chunks were cut from (``embed`` and
    ``embed_features`` fill it), so a catalog can store it without decoding again.
    """

    vectors: np.ndarray
    starts: np.ndarray
    duration_s: float = 0.0
    features: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


class Encoder:
    """Chunk embeddings for one model on one device (see module docstring)."""

    def __init__(
        self,
        model: CoverEncoder,
        model_id: str,
        *,
        device: str | torch.device | None = None,
        settings: Settings | None = None,
        optimize: bool = True,
    ) -> None:
        self.settings = settings or get_settings()
        self.cfg: EncoderConfig = model.cfg
        self.model_id = model_id
        # None: settings.encoder.device ("auto" = CUDA when present).
        self.device = select_device(device if device is not None else self.settings.encoder.device)
        if self.device.type == "cpu":
            self.threads = configure_threads(self.settings.encoder.threads)
        self.batch_size = self.settings.encoder.batch_size
        self.model = model.eval().to(self.device)
        self._runner: nn.Module = self.model
        self._optimized = optimize
        # CPU bf16: a bf16 copy of the folded weights (faster than autocast's per-op casts).
        self._input_dtype = torch.float32
        if optimize:
            folded = to_channels_last(fold_for_inference(self.model), self.device)
            if self.device.type == "cpu" and self.settings.encoder.cpu_precision == "bf16":
                folded = folded.to(torch.bfloat16)
                self._input_dtype = torch.bfloat16
            self._runner = folded
        self._frontend: FrontEnd | None = None

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device | None = None,
        *,
        expect: EncoderConfig | None = None,
        settings: Settings | None = None,
        optimize: bool = True,
    ) -> Encoder:
        """Load a checkpoint (offline, ``weights_only``); raises ``CheckpointError`` when unusable."""
        ck = load_checkpoint(path, expect=expect)
        return cls(ck.model, ck.model_id, device=device, settings=settings, optimize=optimize)

    @classmethod
    def untrained(
        cls,
        cfg: EncoderConfig,
        seed: int = 0,
        device: str | torch.device | None = None,
        *,
        settings: Settings | None = None,
        optimize: bool = True,
    ) -> Encoder:
        """Randomly initialised encoder (deterministic in ``seed``) for tests and baselines."""
        gen_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = CoverEncoder(cfg)
        finally:
            torch.random.set_rng_state(gen_state)
        digest = weights_sha256(model.state_dict())
        mid = make_model_id(f"untrained-{cfg.name}-s{seed}", digest)
        return cls(model, mid, device=device, settings=settings, optimize=optimize)

    # -- front-end ---------------------------------------------------------------------

    @property
    def frontend(self) -> FrontEnd:
        """The feature extractor this model was trained on (``cfg.frontend`` wins over settings)."""
        if self._frontend is None:
            from streamcover.audio.frontend import make_frontend

            fe_settings = self.settings.frontend.model_copy(update={"name": self.cfg.frontend})
            fe = make_frontend(fe_settings)
            if fe.n_bins != self.cfg.in_bins:
                raise ValueError(
                    f"model {self.model_id} expects {self.cfg.in_bins} bins but front-end "
                    f"{fe.name!r} gives {fe.n_bins}"
                )
            self._frontend = fe
        return self._frontend

    # -- embedding ---------------------------------------------------------------------

    def embed(
        self,
        wave_or_path: np.ndarray | str | os.PathLike[str],
        sample_rate: int | None = None,
        *,
        hop_seconds: float | None = None,
    ) -> Embedding:
        """Embed a whole recording: a file path (any format the decoder reads) or a mono
        waveform at ``sample_rate`` (default: the front-end's rate). ``hop_seconds``: the
        chunk hop (default ``audio.hop_seconds``; references use ``catalog.reference_hop_seconds``)."""
        fe = self.frontend
        if isinstance(wave_or_path, str | os.PathLike):
            from streamcover.audio.decode import load_audio

            wave = load_audio(Path(wave_or_path), fe.sample_rate)
        else:
            wave = np.asarray(wave_or_path, dtype=np.float32)
            if wave.ndim != 1:
                raise ValueError(f"embed expects a mono waveform [S], got shape {wave.shape}")
            if sample_rate is not None and sample_rate != fe.sample_rate:
                import torchaudio.functional as AF

                wave = AF.resample(torch.from_numpy(wave), sample_rate, fe.sample_rate).numpy()
        emb = self.embed_features(fe.features(wave), hop_seconds=hop_seconds)
        return Embedding(emb.vectors, emb.starts, duration_s=len(wave) / fe.sample_rate,
                         features=emb.features)

    def embed_features(self, feat: np.ndarray, *, hop_seconds: float | None = None) -> Embedding:
        """Chunk a feature matrix [bins, T] with the settings' window and minimum, at
        ``hop_seconds`` (default ``audio.hop_seconds``), and embed it."""
        from streamcover.audio.chunking import chunk_features

        a = self.settings.audio
        hop = a.hop_seconds if hop_seconds is None else hop_seconds
        fps = self.frontend.frames_per_second
        chunks, starts = chunk_features(feat, fps, a.window_seconds, hop, a.min_clip_seconds)
        return Embedding(self.embed_chunks(chunks), starts, duration_s=feat.shape[1] / fps,
                         features=feat)

    def embed_chunks(self, chunks: ChunkInput) -> np.ndarray:
        """Unit vectors [N, D] for chunks [N, bins, T], or a list of [bins, T_i] of any lengths.

        Chunks of equal T share batches of ``settings.encoder.batch_size``; output order is
        input order.
        """
        items = _as_chunk_list(chunks, self.cfg.in_bins)
        out = np.zeros((len(items), self.cfg.embed_dim), dtype=np.float32)
        if not items:
            return out
        by_len: dict[int, list[int]] = defaultdict(list)
        for i, c in enumerate(items):
            by_len[c.shape[1]].append(i)
        for idx in by_len.values():
            for s in range(0, len(idx), self.batch_size):
                sel = idx[s : s + self.batch_size]
                batch = np.stack([items[i] for i in sel])[:, None]
                out[sel] = self._forward(torch.from_numpy(batch))
        return out

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        x = x.to(self.device, dtype=self._input_dtype, non_blocking=True)
        if self._optimized:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device):
            if self._optimized:
                y = self._runner(x)
            else:
                y = torch.nn.functional.normalize(self.model(x).embedding.float(), dim=1)
        return y.float().cpu().numpy()


def _as_chunk_list(chunks: ChunkInput, bins: int) -> list[np.ndarray]:
    if isinstance(chunks, np.ndarray):
        if chunks.ndim == 4 and chunks.shape[1] == 1:
            chunks = chunks[:, 0]
        if chunks.ndim != 3:
            raise ValueError(f"embed_chunks expects chunks [N, bins, T], got shape {chunks.shape}")
        seq: Sequence[np.ndarray] = list(chunks)
    else:
        seq = chunks
    items: list[np.ndarray] = []
    for i, c in enumerate(seq):
        arr = np.asarray(c, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != bins or arr.shape[1] < 1:
            raise ValueError(f"chunk {i} has shape {arr.shape}; expected [{bins}, T>=1]")
        if not np.isfinite(arr).all():
            raise ValueError(f"chunk {i} contains NaN or infinite values")
        items.append(arr)
    return items
