"""The one encoder checkpoint format: weights + full config + model id + provenance.

A checkpoint is ``torch.save`` of a plain dict (tensors, str, int, float, lists, dicts)
so that loading uses ``torch.load(weights_only=True)``: no pickled code, no network.

Layout (format_version 1)::

    {"format": "streamcover-encoder", "format_version": 1,
     "config": EncoderConfig.to_dict(), "model_id": str, "weights_sha256": str,
     "weights_dtype": "float32" | "float16", "provenance": {...}, "state_dict": {...}}

The model id is ``<config name>-<first 12 hex of the weights' sha256>`` unless the caller
names one; ``weights_sha256`` is always checked on load, so a flipped byte is caught.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from streamcover.files import atomic_path
from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder

FORMAT = "streamcover-encoder"
FORMAT_VERSION = 1
# A training run's resumable state (``streamcover.train.loop``'s ``last.pt``); named here
# so that loading one where a model is expected can say what it is.
TRAIN_STATE_FORMAT = "streamcover-train-state"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, corrupt, or not the model asked for."""


class Provenance(BaseModel):
    """Where the weights came from; stored as a plain dict inside the checkpoint."""

    model_config = ConfigDict(extra="allow")

    data: str = ""  # data set(s) and split, e.g. "shs100k-test-hpcp train split (seed 1234)"
    steps: int = Field(0, ge=0)
    epochs: float = Field(0.0, ge=0)
    metrics: dict[str, float] = Field(default_factory=dict)
    git_commit: str | None = None
    created: str = Field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )
    notes: str = ""


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: CoverEncoder
    cfg: EncoderConfig
    model_id: str
    provenance: Provenance
    weights_sha256: str
    weights_dtype: str


def weights_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """Hash of names, dtypes, shapes and bytes of every tensor, in key order."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def make_model_id(name: str, digest: str) -> str:
    return f"{name}-{digest[:12]}"


def _export_state(model: nn.Module, half: bool) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for k, v in model.state_dict().items():
        t = v.detach().cpu().clone(memory_format=torch.contiguous_format)
        if half and t.is_floating_point():
            t = t.half()
        elif t.is_floating_point():
            t = t.float()
        out[k] = t
    return out


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    cfg: EncoderConfig,
    model_id: str | None = None,
    provenance: Provenance | Mapping[str, Any] | None = None,
    *,
    half: bool = False,
) -> str:
    """Write ``model`` atomically to ``path``; return the model id stored.

    ``half=True`` stores floating-point weights as fp16 (for shipping; the id then
    hashes the fp16 weights, since embeddings from them differ slightly). Loading
    always returns an fp32 model.
    """
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    if isinstance(model, CoverEncoder) and model.cfg != cfg:
        raise CheckpointError("save_checkpoint: cfg differs from the model's own config")
    state = _export_state(model, half)
    _check_fits(cfg, state, str(path))
    digest = weights_sha256(state)
    mid = model_id or make_model_id(cfg.name, digest)
    prov = provenance if isinstance(provenance, Provenance) else Provenance(**(provenance or {}))
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "model_id": mid,
        "weights_sha256": digest,
        "weights_dtype": "float16" if half else "float32",
        "provenance": prov.model_dump(mode="json"),
        "state_dict": state,
    }
    atomic_torch_save(payload, Path(path))
    return mid


def atomic_torch_save(obj: Any, dest: Path) -> None:
    """``torch.save`` to a temp file beside ``dest``, then rename: a crash never leaves a
    half-written checkpoint where a good one was."""
    with atomic_path(dest) as tmp:
        torch.save(obj, tmp)


def _check_fits(cfg: EncoderConfig, state: Mapping[str, Tensor], where: str) -> CoverEncoder:
    """Build the net for ``cfg`` and refuse a state dict whose keys or shapes differ."""
    model = CoverEncoder(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
        if extra:
            parts.append(f"{len(extra)} unexpected tensors (e.g. {extra[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:3]})")
        raise CheckpointError(
            f"{where}: weights do not fit config {cfg.name!r}: " + "; ".join(parts)
        )
    return model


def _config_diff(a: EncoderConfig, b: EncoderConfig) -> list[str]:
    return [f"{k}: checkpoint {x!r} != expected {y!r}" for k, (x, y) in a.changes_to(b).items()]


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw checkpoint dict (weights_only, CPU), after format checks."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, foreign objects
        raise CheckpointError(
            f"checkpoint {p} is corrupt or not a streamcover checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if isinstance(payload, dict) and payload.get("format") == TRAIN_STATE_FORMAT:
        raise CheckpointError(
            f"{p} is a training run's resumable state, not a model checkpoint: use the "
            f"run's best.pt (or warm-start a run from this file with --init-from)")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {p} is not a {FORMAT} checkpoint")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {p} has format_version {version!r}; this build reads {FORMAT_VERSION}"
        )
    for key in ("config", "model_id", "weights_sha256", "state_dict", "provenance"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {p} lacks {key!r}")
    return payload


def load_checkpoint(
    path: str | os.PathLike[str],
    expect: EncoderConfig | Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load a checkpoint into a fresh fp32 :class:`CoverEncoder` in eval mode.

    Refuses with :class:`CheckpointError` when ``expect`` is given and differs from the
    stored config, when the weights do not fit the stored config, or when the weights'
    hash does not match (corruption).
    """
    p = Path(path).expanduser()
    payload = read_checkpoint_meta(p)
    try:
        cfg = EncoderConfig.from_dict(payload["config"])
    except ValidationError as exc:
        raise CheckpointError(f"checkpoint {p} has an invalid config: {exc}") from exc
    if expect is not None:
        want = (
            expect if isinstance(expect, EncoderConfig) else EncoderConfig.from_dict(dict(expect))
        )
        diff = _config_diff(cfg, want)
        if diff:
            raise CheckpointError(
                f"checkpoint {p} is a different model than expected: " + "; ".join(diff)
            )
    state: dict[str, Tensor] = payload["state_dict"]
    digest = weights_sha256(state)
    if digest != payload["weights_sha256"]:
        raise CheckpointError(
            f"checkpoint {p}: weights hash {digest[:12]} != recorded "
            f"{str(payload['weights_sha256'])[:12]} (file corrupted or edited)"
        )
    model = _check_fits(cfg, state, str(p))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.to(map_location).eval()
    try:
        prov = Provenance(**payload["provenance"])
    except (ValidationError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {p} has invalid provenance: {exc}") from exc
    return LoadedCheckpoint(
        model=model,
        cfg=cfg,
        model_id=str(payload["model_id"]),
        provenance=prov,
        weights_sha256=digest,
        weights_dtype=str(payload.get("weights_dtype", "float32")),
    )
