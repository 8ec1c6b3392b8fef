"""Warm starts: seed a new run from another run's training state or a shipped model.

A warm start may change how far the encoder strides (no parameter changes shape) and add
blocks to a stage (they start as identities, ``load_into_deeper``); anything else is a
different network and is refused with the fields that differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from streamcover.model.checkpoint import TRAIN_STATE_FORMAT, CheckpointError, load_checkpoint
from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder, load_into_deeper
from streamcover.train.state import TrainError


def _encoder_state(state: dict[str, Any]) -> dict[str, Tensor]:
    """A training state's encoder weights: the moving average when the run kept one (it is
    what the run validated and saved as best.pt), else the trained weights."""
    if "ema" not in state:
        return dict(state["model"])
    prefix = "module."
    return {k[len(prefix):]: v for k, v in state["ema"].items() if k.startswith(prefix)}


def warm_start(model: CoverEncoder, heads: nn.Module, source: Path, enc_cfg: EncoderConfig,
                device: torch.device) -> dict[str, Any]:
    """Load ``source`` into a new run: a run's training state (encoder and the heads that
    fit) or a shipped model checkpoint (encoder only; heads start fresh). Fine-tuning a
    shipped model on one's own catalogue starts here."""
    try:
        src = torch.load(source, map_location=device, weights_only=True)
    except Exception:  # load_checkpoint below names what is wrong
        src = None
    if isinstance(src, dict) and src.get("format") == TRAIN_STATE_FORMAT:
        changed = _warm_startable_changes(EncoderConfig.from_dict(src["encoder_config"]),
                                          enc_cfg)
        if changed is None:
            raise TrainError(f"--init-from {source}: its encoder config differs from this run's "
                             "in more than its strides and added blocks")
        weights = "average" if "ema" in src else "trained"
        new_blocks = _load_encoder(model, _encoder_state(src), source)
        heads_state = heads.state_dict()
        same = {k: v for k, v in src["heads"].items()
                if k in heads_state and heads_state[k].shape == v.shape}
        heads.load_state_dict(same, strict=False)
        return {"init_from": str(source), "kind": "training state",
                "source_step": int(src["step"]), "source_elapsed_s": float(src["elapsed_s"]),
                "heads_loaded": sorted(same), "config_changes": changed,
                "new_blocks": new_blocks, "weights": weights}
    try:
        loaded = load_checkpoint(source)
        changed = _warm_startable_changes(loaded.cfg, enc_cfg)
        if changed is None:
            raise CheckpointError(
                "its encoder differs from this run's in more than its strides and added "
                "blocks: " + "; ".join(f"{k} {x!r} != {y!r}"
                                       for k, (x, y) in loaded.cfg.changes_to(enc_cfg).items()))
    except CheckpointError as exc:
        raise TrainError(f"--init-from {source} is neither a training state nor a usable "
                         f"model checkpoint: {exc}") from exc
    new_blocks = _load_encoder(model, loaded.model.state_dict(), source)
    return {"init_from": str(source), "kind": "model checkpoint", "model_id": loaded.model_id,
            "heads_loaded": [], "config_changes": changed, "new_blocks": new_blocks}


# Encoder fields a warm start may change. Strides set how far the feature maps are
# strided and never a parameter's shape: weights trained at one time resolution can
# seed a run at another (a finer time axis). More blocks per stage start as identities
# (``load_into_deeper``): a deeper encoder seeded by a shallower one.
_WARM_START_FIELDS = frozenset({"name", "stem_stride", "stem_pool_stride", "stage_strides",
                                "layers"})


def _warm_startable_changes(src: EncoderConfig,
                            dst: EncoderConfig) -> dict[str, list[Any]] | None:
    """The fields that differ (source, run), or None when the source cannot seed the run:
    a field outside ``_WARM_START_FIELDS`` differs, or a stage loses blocks."""
    changes = src.changes_to(dst)
    if set(changes) - _WARM_START_FIELDS:
        return None
    if "layers" in changes:
        old, new = changes["layers"]
        if len(old) != len(new) or any(a > b for a, b in zip(old, new, strict=True)):
            return None
    return {k: [v[0], v[1]] for k, v in changes.items() if k != "name"}


def _load_encoder(model: CoverEncoder, state: dict[str, Tensor], source: Path) -> list[str]:
    """Load the source's encoder weights; blocks it lacks start as identities."""
    try:
        return load_into_deeper(model, state)
    except ValueError as exc:
        raise TrainError(f"--init-from {source}: {exc}") from exc
