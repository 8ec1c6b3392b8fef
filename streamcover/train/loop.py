"""The training loop: resumable, seeded, logged; CPU or CUDA (with AMP).

Run directory layout (``~/.cache/streamcover/runs/<run>/``, never the work tree):

- ``config.json``     the TrainConfig of the run (a resume must match it);
- ``last.pt``         full training state (model, heads, optimizer, scaler, step, lr,
                      plateau and best-so-far), written atomically every N steps;
- ``best.pt``         the best encoder so far in the shared checkpoint format
                      (``streamcover.model.checkpoint``), by validation score; with
                      ``optim.ema_decay`` on, the weights' moving average is what is
                      validated and saved there (``last.pt`` keeps both);
- ``train_log.csv``   one row per step: losses, lr, tau, chunks, elapsed time;
- ``val_log.csv``     one row per validation: full-length mAP/P@10/MR1 and 30 s mAP.

Batches are a pure function of (seed, step), so a resumed run sees exactly the
batches an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from streamcover.data.chunker import Chunker
from streamcover.data.tracks import TrackSet
from streamcover.device import configure_threads, select_device
from streamcover.log import get_logger
from streamcover.model.checkpoint import save_checkpoint
from streamcover.model.config import EncoderConfig
from streamcover.train.batches import Batch, PKBatchSampler
from streamcover.train.config import DataConfig, OptimConfig, TrainConfig
from streamcover.train.forward import encode_groups
from streamcover.train.losses import MultiLoss
from streamcover.train.state import (
    RunState,
    Trainee,
    TrainError,
    build_trainee,
    ema_model,
    load_train_state,
    save_train_state,
)
from streamcover.train.validation import ValResult, validate
from streamcover.train.warm_start import warm_start

__all__ = ["TrainError", "TrainResult", "build_encoder_config", "train"]

LOSS_COLUMNS = ("total", "ce", "triplet", "lac", "lat", "map")
# Config fields a resumed run may change (they do not alter what is learned per step).
RESUMABLE_CHANGES = {"max_steps", "max_hours", "val_every_steps", "checkpoint_every_steps",
                     "threads", "device", "val_max_works"}

log = get_logger(__name__)


def build_encoder_config(cfg: TrainConfig) -> EncoderConfig:
    """The encoder architecture of a run: a preset plus the run's overrides (ablations)."""
    preset = EncoderConfig.compact if cfg.encoder_preset == "compact" else EncoderConfig.paper
    overrides = dict(cfg.encoder_overrides)
    overrides.setdefault("name", f"streamcover-{cfg.frontend}-{cfg.encoder_preset}")
    return preset(cfg.frontend, **overrides)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    elapsed_s: float
    best: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)


def _append_csv(path: Path, row: dict[str, Any], columns: list[str]) -> None:
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def _check_resume_config(run_dir: Path, cfg: TrainConfig) -> None:
    saved_path = run_dir / "config.json"
    if not saved_path.exists():
        saved_path.write_text(cfg.model_dump_json(indent=1) + "\n", encoding="utf-8")
        return
    try:
        # Re-validate so fields added since the run started compare at their defaults.
        saved = json.loads(TrainConfig.model_validate_json(
            saved_path.read_text(encoding="utf-8")).model_dump_json())
    except ValueError as exc:
        raise TrainError(f"{saved_path} is not a valid training config: {exc}") from exc
    now = json.loads(cfg.model_dump_json())
    diff = [k for k in set(saved) | set(now)
            if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)]
    if diff:
        raise TrainError(
            f"run directory {run_dir} was started with a different config "
            f"(fields {sorted(diff)}); use a new --run name or the saved config.json"
        )
    saved_path.write_text(cfg.model_dump_json(indent=1) + "\n", encoding="utf-8")


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and stop at the end of the step."""

    def __init__(self) -> None:
        self.stop = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop = True

        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for s in old:
                signal.signal(s, handler)
        except ValueError:  # not the main thread: no signal handling
            old = {}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def learning_rate(optim: OptimConfig, step: int, lr_scale: float) -> float:
    """The base learning rate at ``step``: linear warm-up times the plateau scale."""
    warm = min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps else 1.0
    return optim.lr * lr_scale * warm


def epochs_done(step: int, data: DataConfig, n_recordings: int) -> float:
    """Samples drawn so far, in passes over the training recordings."""
    return step * data.works_per_batch * data.versions_per_work / max(1, n_recordings)


def plateau_schedule(improved: bool, plateau_bad: int, lr_scale: float,
                     optim: OptimConfig) -> tuple[int, float]:
    """Reduce-on-plateau: after more than ``plateau_patience`` validations in a row without
    a new best, scale the lr by ``plateau_factor`` (floored at ``min_lr``).

    Returns the new (validations without a new best, lr scale)."""
    if improved:
        return 0, lr_scale
    plateau_bad += 1
    if plateau_bad > optim.plateau_patience:
        return 0, max(lr_scale * optim.plateau_factor, optim.min_lr / optim.lr)
    return plateau_bad, lr_scale


def cap_val_works(val_tracks: TrackSet | None, cfg: TrainConfig) -> TrackSet | None:
    """A seeded subset of ``val_max_works`` validation works (0 = all), to keep it cheap."""
    if val_tracks is None or not cfg.val_max_works or val_tracks.n_works <= cfg.val_max_works:
        return val_tracks
    keep = np.random.default_rng(cfg.seed).choice(
        np.unique(val_tracks.works), size=cfg.val_max_works, replace=False)
    return val_tracks.select_works(keep)


def optimizer_step(trainee: Trainee, batch: Batch, lr: float, grad_clip: float,
                   step: int) -> dict[str, Tensor]:
    """One update on ``batch`` at ``lr``: forward, loss, backward, clip, step, average.

    Returns the loss terms; a non-finite loss stops the run with a clear error."""
    for g in trainee.opt.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    labels = torch.from_numpy(batch.labels).to(trainee.device)
    with torch.autocast(trainee.device.type, dtype=trainee.amp_dtype, enabled=trainee.use_amp):
        pooled, neck, embedding, owner = encode_groups(trainee.model, batch.groups,
                                                       batch.owners, trainee.device)
        terms: dict[str, Tensor] = trainee.heads(pooled, neck, embedding, owner, labels)
    loss = terms["total"]
    if not torch.isfinite(loss):
        raise TrainError(f"loss became {loss.item()} at step {step}; lower optim.lr")
    trainee.opt.zero_grad(set_to_none=True)
    trainee.scaler.scale(loss).backward()
    trainee.scaler.unscale_(trainee.opt)
    nn.utils.clip_grad_norm_(
        [p for g in trainee.opt.param_groups for p in g["params"]], grad_clip)
    trainee.scaler.step(trainee.opt)
    trainee.scaler.update()
    if trainee.ema is not None:
        trainee.ema.update_parameters(trainee.model)
    return terms


TRAIN_COLUMNS = ["step", "elapsed_s", "epoch", "lr", "tau", "n_samples", "n_chunks",
                 "step_seconds", *LOSS_COLUMNS]


def step_row(state: RunState, epoch: float, lr: float, heads: MultiLoss, batch: Batch,
             seconds: float, terms: dict[str, Tensor]) -> dict[str, Any]:
    """One row of ``train_log.csv``."""
    row: dict[str, Any] = {
        "step": state.step, "elapsed_s": round(state.elapsed_s, 1), "epoch": round(epoch, 4),
        "lr": lr, "tau": float(heads.proxy.tau.item()) if heads.proxy is not None else "",
        "n_samples": batch.n_samples, "n_chunks": batch.total_chunks,
        "step_seconds": round(seconds, 3),
    }
    row.update({k: round(float(v.item()), 5) for k, v in terms.items()})
    return row


@dataclass
class _Run:
    """One invocation of ``train``: the run's fixed inputs, its trainee and its state."""

    cfg: TrainConfig
    run_dir: Path
    train_tracks: TrackSet
    val_tracks: TrackSet | None
    trainee: Trainee
    state: RunState
    data_desc: str
    chunker: Chunker | None

    @property
    def epoch(self) -> float:
        return epochs_done(self.state.step, self.cfg.data, len(self.train_tracks))

    @property
    def lr(self) -> float:
        return learning_rate(self.cfg.optim, self.state.step, self.state.lr_scale)

    def save(self) -> None:
        save_train_state(self.run_dir / "last.pt", self.cfg, self.trainee, self.state)

    def validate(self) -> None:
        """Validate, log, keep best.pt and step the plateau schedule (no-op without val)."""
        val_tracks, state, trainee = self.val_tracks, self.state, self.trainee
        if val_tracks is None or len(val_tracks) == 0:
            return
        t0 = time.time()
        vr = validate(trainee.evaluated, val_tracks, self.cfg, trainee.device, state.step,
                      self.chunker)
        row = {"step": state.step, "elapsed_s": round(state.elapsed_s, 1),
               "epoch": round(self.epoch, 3), "map_full": vr.map_full, "p10_full": vr.p10_full,
               "mr1_full": vr.mr1_full, "map_30s": vr.map_30s, "score": vr.score,
               "lr": self.lr, "val_seconds": round(time.time() - t0, 1)}
        state.history.append(row)
        _append_csv(self.run_dir / "val_log.csv", row, list(row))
        improved = state.best is None or vr.score > float(state.best["score"])
        if improved:
            state.best = dict(row)
            self._save_best(vr)
        state.plateau_bad, state.lr_scale = plateau_schedule(
            improved, state.plateau_bad, state.lr_scale, self.cfg.optim)
        best_score = round(float(state.best["score"]), 4) if state.best else None
        log.info("validation", step=state.step, map_full=round(vr.map_full, 4),
                 p10_full=round(vr.p10_full, 4), mr1_full=round(vr.mr1_full, 1),
                 map_30s=round(vr.map_30s, 4), best_score=best_score, lr=f"{self.lr:.2e}",
                 seconds=round(time.time() - t0, 1))

    def _save_best(self, vr: ValResult) -> None:
        save_checkpoint(
            self.run_dir / "best.pt", self.trainee.evaluated, self.trainee.enc_cfg,
            provenance={"data": self.data_desc, "steps": self.state.step,
                        "epochs": round(self.epoch, 3),
                        "metrics": {"val_map_full": vr.map_full, "val_map_30s": vr.map_30s,
                                    "val_p10_full": vr.p10_full, "val_mr1_full": vr.mr1_full},
                        "notes": f"run {self.run_dir.name}, "
                                 f"{self.state.elapsed_s / 3600:.2f} h training"},
        )


def _start_run(cfg: TrainConfig, train_tracks: TrackSet, run_dir: Path,
               init_from: Path | None) -> tuple[Trainee, RunState]:
    """Build the trainee, then resume ``run_dir`` or warm-start it from ``init_from``."""
    device = select_device(cfg.device)
    if device.type == "cpu":
        configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    enc_cfg = build_encoder_config(cfg)
    if train_tracks.n_bins != enc_cfg.in_bins:
        raise TrainError(f"training features have {train_tracks.n_bins} bins; the "
                         f"{cfg.frontend} encoder expects {enc_cfg.in_bins}")
    trainee = build_trainee(cfg, enc_cfg, int(train_tracks.labels.max()) + 1, device)
    state_path = run_dir / "last.pt"
    state, resumed_ema = RunState(), None
    resumed = state_path.exists()
    if resumed:
        state, resumed_ema = load_train_state(state_path, trainee)
        log.info("resumed", run=str(run_dir), step=state.step,
                 elapsed_h=round(state.elapsed_s / 3600, 3))
    elif init_from is not None:
        info = warm_start(trainee.model, trainee.heads, init_from, enc_cfg, device)
        (run_dir / "init.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        log.info("initialised", run=str(run_dir), **info)
    trainee.ema = ema_model(trainee.model, cfg.optim.ema_decay)
    if trainee.ema is not None and resumed:
        if resumed_ema is None:
            raise TrainError(f"{state_path} has no weight average; it was not started with "
                             "optim.ema_decay")
        trainee.ema.load_state_dict(resumed_ema)
    return trainee, state


def train(cfg: TrainConfig, train_tracks: TrackSet, val_tracks: TrackSet | None, run_dir: Path,
          *, data_desc: str = "", progress: bool | None = None,
          chunker: Chunker | None = None, init_from: Path | None = None) -> TrainResult:
    """Train (or resume) the run in ``run_dir`` until ``max_steps`` or ``max_hours``.

    ``init_from`` (a run's ``last.pt``) warm-starts a *new* run from another run's
    encoder and, when the class count matches, its classifier heads (as ByteCover3
    starts from ByteCover2); optimizer state and step start afresh. Ignored on resume.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_resume_config(run_dir, cfg)
    trainee, state = _start_run(cfg, train_tracks, run_dir, init_from)
    run = _Run(cfg, run_dir, train_tracks, cap_val_works(val_tracks, cfg), trainee, state,
               data_desc, chunker)
    sampler = PKBatchSampler(train_tracks, cfg.data, cfg.augment, cfg.seed,
                             circular_pitch=cfg.frontend == "hpcp", chunker=chunker)
    stop = _StopFlag()
    interactive = sys.stderr.isatty() if progress is None else progress
    started = time.time()
    invocation_limit = cfg.max_hours * 3600 if cfg.max_hours > 0 else math.inf
    trainee.model.train()
    trainee.heads.train()
    with stop.installed(), _progress(interactive, cfg.max_steps, state.step) as advance:
        while state.step < cfg.max_steps and not stop.stop:
            if time.time() - started > invocation_limit:
                break
            t0 = time.time()
            torch.manual_seed(cfg.seed * 1_000_003 + state.step)
            batch = sampler.batch(state.step)
            lr = run.lr
            terms = optimizer_step(trainee, batch, lr, cfg.optim.grad_clip, state.step)
            state.step += 1
            dt = time.time() - t0
            state.elapsed_s += dt
            row = step_row(state, run.epoch, lr, trainee.heads, batch, dt, terms)
            _append_csv(run_dir / "train_log.csv", row, TRAIN_COLUMNS)
            loss = float(terms["total"].item())
            advance(state.step, loss)
            if not interactive and state.step % 10 == 0:
                log.info("step", step=state.step, loss=round(loss, 4),
                         **{k: round(float(v.item()), 3) for k, v in terms.items()
                            if k != "total"},
                         chunks=batch.total_chunks, seconds=round(dt, 2), lr=f"{lr:.2e}")
            if state.step % cfg.val_every_steps == 0:
                t_val = time.time()
                run.validate()
                state.elapsed_s += time.time() - t_val
                trainee.model.train()
            if state.step % cfg.checkpoint_every_steps == 0:
                run.save()
    run.save()
    return TrainResult(run_dir=run_dir, steps=state.step, elapsed_s=state.elapsed_s,
                       best=state.best, history=state.history)


@contextlib.contextmanager
def _progress(enabled: bool, total: int, start: int) -> Iterator[Any]:
    """A rich progress bar on a terminal; a no-op callable otherwise (the log carries
    progress: a ``step`` line every 10 steps)."""
    if not enabled:
        yield lambda step, loss: None
        return
    from rich.progress import Progress

    from streamcover.progress import progress_columns

    with Progress(*progress_columns("train", stats="loss {task.fields[loss]:.4f}"),
                  transient=False) as prog:
        task = prog.add_task("train", total=total, completed=start, loss=float("nan"))

        def advance(step: int, loss: float) -> None:
            prog.update(task, completed=step, loss=loss)

        yield advance

