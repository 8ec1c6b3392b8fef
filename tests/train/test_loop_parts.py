"""The training loop's pieces on their own: schedule, state round trip, one update."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import TINY_ENCODER

from streamcover.data.shs import ShsData
from streamcover.train.batches import PKBatchSampler
from streamcover.train.config import OptimConfig, TrainConfig
from streamcover.train.loop import (
    build_encoder_config,
    cap_val_works,
    epochs_done,
    learning_rate,
    optimizer_step,
    plateau_schedule,
)
from streamcover.train.state import (
    RunState,
    TrainError,
    build_trainee,
    load_train_state,
    save_train_state,
)


def _cfg(**kw: object) -> TrainConfig:
    doc: dict[str, object] = {
        "name": "parts", "encoder_overrides": TINY_ENCODER, "threads": 1, "device": "cpu",
        "data": {"works_per_batch": 3, "versions_per_work": 2, "full_max_chunks": 2},
        "optim": {"warmup_steps": 4},
    }
    doc.update(kw)
    return TrainConfig.model_validate(doc)


def test_learning_rate_warms_up_linearly_then_follows_the_plateau_scale() -> None:
    opt = OptimConfig(lr=1e-3, warmup_steps=4)
    assert [learning_rate(opt, s, 1.0) for s in range(5)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert learning_rate(opt, 100, 0.25) == pytest.approx(2.5e-4)
    assert learning_rate(OptimConfig(lr=2e-3, warmup_steps=0), 0, 1.0) == pytest.approx(2e-3)


def test_plateau_schedule_halves_after_patience_and_stops_at_min_lr() -> None:
    opt = OptimConfig(lr=1e-3, plateau_patience=1, plateau_factor=0.5, min_lr=2e-4)
    bad, scale = 0, 1.0
    seen = []
    for improved in (False, False, True, False, False, False, False, False, False):
        bad, scale = plateau_schedule(improved, bad, scale, opt)
        seen.append((bad, scale))
    assert seen == [(1, 1.0), (0, 0.5), (0, 0.5), (1, 0.5), (0, 0.25), (1, 0.25), (0, 0.2),
                    (1, 0.2), (0, 0.2)]


def test_epochs_done_counts_samples_over_recordings() -> None:
    cfg = _cfg()
    assert epochs_done(10, cfg.data, 30) == pytest.approx(10 * 3 * 2 / 30)
    assert epochs_done(5, cfg.data, 0) == pytest.approx(30.0)  # no division by zero


def test_cap_val_works_is_seeded_and_keeps_whole_works(shs_real_slice: ShsData) -> None:
    tracks = shs_real_slice.tracks
    assert cap_val_works(tracks, _cfg()) is tracks
    assert cap_val_works(None, _cfg(val_max_works=3)) is None
    a = cap_val_works(tracks, _cfg(val_max_works=3))
    b = cap_val_works(tracks, _cfg(val_max_works=3))
    assert a is not None and b is not None and a.n_works == 3
    assert a.track_ids == b.track_ids
    kept = set(np.unique(a.works))
    assert len(a) == int(np.isin(tracks.works, list(kept)).sum())


def test_state_round_trip_and_an_update_changes_the_weights(shs_real_slice: ShsData,
                                                            tmp_path: Path) -> None:
    cfg = _cfg(loss={"map_weight": 0.5})
    enc_cfg = build_encoder_config(cfg)
    tracks = shs_real_slice.tracks
    n_classes = int(tracks.labels.max()) + 1
    torch.manual_seed(cfg.seed)
    trainee = build_trainee(cfg, enc_cfg, n_classes, torch.device("cpu"))
    before = {k: v.clone() for k, v in trainee.model.state_dict().items()}
    batch = PKBatchSampler(tracks, cfg.data, cfg.augment, cfg.seed, circular_pitch=True).batch(0)
    terms = optimizer_step(trainee, batch, 1e-3, cfg.optim.grad_clip, step=0)
    assert {"total", "ce", "triplet", "lac", "lat", "map"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    assert any(not torch.equal(before[k], v) for k, v in trainee.model.state_dict().items())

    state = RunState(step=1, elapsed_s=2.5, lr_scale=0.5, plateau_bad=1,
                     best={"step": 1, "score": 0.1}, history=[{"step": 1, "score": 0.1}])
    save_train_state(tmp_path / "last.pt", cfg, trainee, state)
    other = build_trainee(cfg, enc_cfg, n_classes, torch.device("cpu"))
    loaded, ema = load_train_state(tmp_path / "last.pt", other)
    assert loaded == state and ema is None
    for k, v in trainee.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[k], v), k
    assert other.opt.state_dict()["state"].keys() == trainee.opt.state_dict()["state"].keys()

    # A state of another architecture, or a file that is not one, is refused.
    wider = _cfg(encoder_overrides={**TINY_ENCODER, "widths": [4, 8, 8, 32]})
    stranger = build_trainee(wider, build_encoder_config(wider), n_classes, torch.device("cpu"))
    with pytest.raises(TrainError, match="encoder config differs"):
        load_train_state(tmp_path / "last.pt", stranger)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(TrainError, match="not a streamcover training state"):
        load_train_state(tmp_path / "other.pt", other)


def test_a_non_finite_loss_stops_with_a_clear_error(shs_real_slice: ShsData) -> None:
    cfg = _cfg()
    tracks = shs_real_slice.tracks
    trainee = build_trainee(cfg, build_encoder_config(cfg), int(tracks.labels.max()) + 1,
                            torch.device("cpu"))
    with torch.no_grad():
        next(trainee.model.parameters()).fill_(float("nan"))
    batch = PKBatchSampler(tracks, cfg.data, cfg.augment, cfg.seed, circular_pitch=True).batch(0)
    with pytest.raises(TrainError, match=r"at step 7; lower optim\.lr"):
        optimizer_step(trainee, batch, 1e-3, cfg.optim.grad_clip, step=7)
