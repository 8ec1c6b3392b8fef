"""Training configuration: one JSON/YAML file per run (see ops/train/*.json).

Every knob that changes what a run learns is here, so a run directory plus its
saved config is enough to reproduce or resume it. A config file may extend another
(``"base": "hpcp-compact.json"``), so a variant is a short diff of the recipe it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamcover.manifests import json_object


class DataConfig(BaseModel):
    """How training samples are cut from recordings."""

    model_config = ConfigDict(extra="forbid")

    # Works per batch (P) and versions per work (K); versions are drawn with
    # replacement when a work has fewer than K.
    works_per_batch: int = Field(16, ge=2)
    versions_per_work: int = Field(4, ge=2)
    # Share of samples that are short clips; the rest are full tracks (ByteCover3: 1:1).
    clip_fraction: float = Field(0.5, ge=0, le=1)
    clip_min_s: float = Field(6.0, gt=0)
    clip_max_s: float = Field(60.0, gt=0)
    # Full tracks are capped to a random contiguous window of this many chunks
    # (10 chunks = 110 s at 20 s / 10 s hop) to keep the CPU cost of a batch bounded.
    full_max_chunks: int = Field(10, ge=1)
    window_s: float = Field(20.0, gt=0)
    hop_s: float = Field(10.0, gt=0)
    min_s: float = Field(6.0, gt=0)

    @model_validator(mode="after")
    def _clip_range(self) -> DataConfig:
        if self.clip_min_s > self.clip_max_s:
            raise ValueError("data.clip_min_s must not exceed data.clip_max_s")
        return self


class AugmentConfig(BaseModel):
    """Augmentations that make versions of a work look like covers of each other."""

    model_config = ConfigDict(extra="forbid")

    # Circular roll of the pitch axis: HPCP bins (12/octave) or CQT bins (non-circular shift).
    key_prob: float = Field(0.75, ge=0, le=1)
    # Time stretch by linear interpolation along time, factor uniform in [tempo_min, tempo_max].
    tempo_prob: float = Field(0.5, ge=0, le=1)
    tempo_min: float = Field(0.7, gt=0)
    tempo_max: float = Field(1.4, gt=0)
    # CASPERNET spectrum stitching: splice a segment of another version of the same work.
    stitch_prob: float = Field(0.0, ge=0, le=1)


class LossConfig(BaseModel):
    """Weights of the ByteCover multi-loss and the ByteCover3 Local Alignment Loss."""

    model_config = ConfigDict(extra="forbid")

    # What the global losses (CE, triplet) see: "chunk" = every chunk's own f_c / f_t
    # (a chunk labelled with its work), "sample" = the mean over a sample's chunks.
    global_level: Literal["chunk", "sample"] = "sample"
    ce_weight: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    # The CE classifier: "linear" (ByteCover's bias-free FC on f_c) or "cosine" (CosFace:
    # scale * cos(f_c, w) minus a margin on the true class), which learns faster on
    # small, many-class data because the logits cannot grow by inflating norms.
    classifier: Literal["linear", "cosine"] = "linear"
    cosine_scale: float = Field(30.0, gt=0)
    cosine_margin: float = Field(0.2, ge=0, lt=1)
    triplet_weight: float = Field(1.0, ge=0)
    triplet_margin: float = Field(0.3, ge=0)
    # Local Alignment Loss (L_lac + L_lat) on the chunk embeddings; 0 disables it.
    lac_weight: float = Field(1.0, ge=0)
    lac_proxies: int = Field(9, ge=1)
    lat_weight: float = Field(1.0, ge=0)
    lat_margin: float = Field(0.1, ge=0)
    lat_pull_weight: float = Field(0.1, ge=0)
    # ASimT MAPLoss (smooth-AP) on the MaxMean similarities between samples; 0 disables it.
    map_weight: float = Field(0.0, ge=0)
    map_temperature: float = Field(0.01, gt=0)
    # The learned LAL logit scale exp(tau) starts at tau=0; it gets this lr multiplier so it
    # can reach useful scales in a CPU-sized number of steps.
    tau_lr_mult: float = Field(50.0, gt=0)


class OptimConfig(BaseModel):
    """Adam with warm-up and reduce-on-plateau on validation mAP."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0)
    plateau_patience: int = Field(3, ge=0)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    min_lr: float = Field(1e-5, gt=0)
    grad_clip: float = Field(5.0, gt=0)
    # Exponential moving average of the encoder's weights (and BatchNorm statistics),
    # updated every step; when on (> 0) validation, best.pt and the plateau schedule use
    # the average. 0.996 averages over roughly the last 250 steps. 0 = off.
    ema_decay: float = Field(0.0, ge=0, lt=1)


class TrainConfig(BaseModel):
    """A whole training run."""

    model_config = ConfigDict(extra="forbid")

    name: str = "hpcp-compact"
    frontend: Literal["hpcp", "cqt"] = "hpcp"
    # Encoder preset ("compact" | "paper") plus field overrides for ablations,
    # e.g. {"ibn": false} or {"pooling": "avg"}.
    encoder_preset: Literal["compact", "paper"] = "compact"
    encoder_overrides: dict[str, Any] = Field(default_factory=dict)
    seed: int = 1234
    max_steps: int = Field(200_000, ge=1)
    # Stop after this many wall-clock hours of this invocation (0 = no limit).
    max_hours: float = Field(0.0, ge=0)
    val_every_steps: int = Field(250, ge=1)
    checkpoint_every_steps: int = Field(50, ge=1)
    # Validation works are capped to keep periodic validation cheap (0 = all).
    val_max_works: int = Field(0, ge=0)
    threads: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)


BASE_KEY = "base"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: objects merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


_NOT_OBJECT = "a training config must be a JSON object"


def _read_mapping(path: Path) -> dict[str, Any]:
    """One config file's own JSON (or YAML) object, before its base is applied."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: training config not found") from None
    if path.suffix.lower() not in {".yaml", ".yml"}:
        return json_object(text, str(path), "not valid JSON", _NOT_OBJECT)
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError(f"{path}: YAML configs need PyYAML; use JSON instead") from exc
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {_NOT_OBJECT}")
    return data


def resolve_train_config(path: Path) -> dict[str, Any]:
    """The effective config of ``path`` as a plain mapping, its ``"base"`` chain applied.

    A config may name another file (relative to its own folder) under ``"base"``; its own
    keys are deep-merged over that file's resolved content, so a variant states only what
    it changes. A missing base or a cycle is an error naming the chain.
    """
    chain: list[Path] = []
    layers: list[dict[str, Any]] = []
    current = Path(path)
    while True:
        key = current.resolve()
        if key in chain:
            names = " -> ".join(p.name for p in [*chain, key])
            raise ValueError(f"{path}: training configs form a cycle: {names}")
        chain.append(key)
        data = _read_mapping(current)
        layers.append(data)
        base = data.get(BASE_KEY)
        if base is None:
            break
        if not isinstance(base, str) or not base.strip():
            raise ValueError(f"{current}: \"{BASE_KEY}\" must name a config file")
        parent = current.parent / base
        if not parent.is_file():
            raise ValueError(f"{current}: base config {base!r} not found (looked for {parent})")
        current = parent
    merged: dict[str, Any] = {}
    for layer in reversed(layers):
        merged = deep_merge(merged, {k: v for k, v in layer.items() if k != BASE_KEY})
    return merged


def load_train_config(path: Path) -> TrainConfig:
    """Read a JSON (or YAML, if PyYAML is installed) training config, naming the file on error."""
    data = resolve_train_config(Path(path))
    try:
        return TrainConfig.model_validate(data)
    except ValueError as exc:
        raise ValueError(f"{path}: invalid training config: {exc}") from exc
