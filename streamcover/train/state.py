"""What a training run updates and keeps: the trainee (encoder, heads, optimizer, AMP
scaler, weight average) and the run state that ``last.pt`` carries besides them.

Kept apart from the loop so resuming is testable on its own: ``save_train_state`` then
``load_train_state`` restores a run bit-for-bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from streamcover.device import gpu_autocast_dtype, to_channels_last
from streamcover.model.checkpoint import TRAIN_STATE_FORMAT, atomic_torch_save
from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder
from streamcover.train.config import TrainConfig
from streamcover.train.losses import MultiLoss


class TrainError(Exception):
    """A run that cannot start or resume (bad config, mismatched run directory)."""


def build_heads(cfg: TrainConfig, enc_cfg: EncoderConfig, n_classes: int) -> MultiLoss:
    """The loss heads (classifier, LAL proxies, ...) the config asks for."""
    lc = cfg.loss
    return MultiLoss(
        n_classes, enc_cfg.feat_dim, enc_cfg.embed_dim, ce_weight=lc.ce_weight,
        label_smoothing=lc.label_smoothing, triplet_weight=lc.triplet_weight,
        triplet_margin=lc.triplet_margin, lac_weight=lc.lac_weight, lac_proxies=lc.lac_proxies,
        lat_weight=lc.lat_weight, lat_margin=lc.lat_margin, lat_pull_weight=lc.lat_pull_weight,
        map_weight=lc.map_weight, map_temperature=lc.map_temperature,
        global_level=lc.global_level, classifier=lc.classifier,
        cosine_scale=lc.cosine_scale, cosine_margin=lc.cosine_margin,
    )


def build_optimizer(cfg: TrainConfig, model: nn.Module, heads: nn.Module) -> torch.optim.Adam:
    """Adam over the encoder and heads; the LAL scale tau gets ``tau_lr_mult`` and no decay.

    Each parameter group carries ``lr_mult``, applied to the scheduled lr every step."""
    tau_params = [p for n, p in heads.named_parameters() if n.endswith("tau")]
    other_heads = [p for n, p in heads.named_parameters() if not n.endswith("tau")]
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if p.requires_grad] + other_heads,
         "lr_mult": 1.0},
    ]
    if tau_params:
        groups.append({"params": tau_params, "lr_mult": cfg.loss.tau_lr_mult,
                       "weight_decay": 0.0})
    return torch.optim.Adam(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)


@dataclass
class RunState:
    """Where a run stands: what ``last.pt`` carries besides the weights and optimizer."""

    step: int = 0
    elapsed_s: float = 0.0
    lr_scale: float = 1.0
    plateau_bad: int = 0
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Trainee:
    """Everything a step updates: the encoder, its heads, the optimizer, the AMP scaler and
    the optional moving average of the weights."""

    enc_cfg: EncoderConfig
    model: CoverEncoder
    heads: MultiLoss
    opt: torch.optim.Adam
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype
    ema: AveragedModel | None = None

    @property
    def use_amp(self) -> bool:
        return self.device.type == "cuda"

    @property
    def evaluated(self) -> CoverEncoder:
        """The weights that are validated and saved as best.pt: the average when kept."""
        return self.model if self.ema is None else self.ema.module  # type: ignore[return-value]


def build_trainee(cfg: TrainConfig, enc_cfg: EncoderConfig, n_classes: int,
                  device: torch.device) -> Trainee:
    """A fresh encoder and heads (seeded by the caller), their optimizer and AMP scaler."""
    model = to_channels_last(CoverEncoder(enc_cfg), device)
    heads = build_heads(cfg, enc_cfg, n_classes).to(device)
    opt = build_optimizer(cfg, model, heads)
    use_amp = device.type == "cuda"
    amp_dtype = gpu_autocast_dtype(device) if use_amp else torch.float32
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return Trainee(enc_cfg, model, heads, opt, scaler, device, amp_dtype)


def load_train_state(path: Path, trainee: Trainee) -> tuple[RunState, dict[str, Any] | None]:
    """Restore a run's ``last.pt`` into ``trainee``; returns its state and saved average."""
    st = torch.load(path, map_location=trainee.device, weights_only=True)
    if not isinstance(st, dict) or st.get("format") != TRAIN_STATE_FORMAT:
        raise TrainError(f"{path} is not a streamcover training state")
    if st["encoder_config"] != trainee.enc_cfg.to_dict():
        raise TrainError(f"{path}: encoder config differs from this run's config")
    trainee.model.load_state_dict(st["model"])
    trainee.heads.load_state_dict(st["heads"])
    trainee.opt.load_state_dict(st["optim"])
    trainee.scaler.load_state_dict(st["scaler"])
    state = RunState(step=int(st["step"]), elapsed_s=float(st["elapsed_s"]),
                     lr_scale=float(st["lr_scale"]), plateau_bad=int(st["plateau_bad"]),
                     best=json.loads(st["best_json"]) if st["best_json"] else None,
                     history=json.loads(st["history_json"]))
    return state, st.get("ema")


def save_train_state(path: Path, cfg: TrainConfig, trainee: Trainee, state: RunState) -> None:
    """Write ``last.pt`` atomically: everything a resume needs to continue bit-for-bit."""
    ema = trainee.ema
    atomic_torch_save({
        "format": TRAIN_STATE_FORMAT, "config": cfg.model_dump(mode="json"),
        "encoder_config": trainee.enc_cfg.to_dict(), "step": state.step,
        "elapsed_s": state.elapsed_s, "lr_scale": state.lr_scale,
        "plateau_bad": state.plateau_bad,
        "best_json": json.dumps(state.best) if state.best else "",
        "history_json": json.dumps(state.history),
        "model": trainee.model.state_dict(), "heads": trainee.heads.state_dict(),
        "optim": trainee.opt.state_dict(), "scaler": trainee.scaler.state_dict(),
        **({"ema": ema.state_dict()} if ema is not None else {}),
        "sampler": {"seed": cfg.seed, "next_step": state.step},
    }, path)


def ema_model(model: CoverEncoder, decay: float) -> AveragedModel | None:
    """The moving average of ``model``'s weights and BatchNorm statistics, or None (off).

    Its first update copies the model (so a warm start's weights are where it begins)."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
