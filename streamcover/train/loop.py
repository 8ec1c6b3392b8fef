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
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from streamcover.device import (
    configure_threads,
    gpu_autocast_dtype,
    select_device,
    to_channels_last,
)
from streamcover.eval.embedders import EncoderEmbedder
from streamcover.eval.protocols import ChunkSets, full_length, short_queries
from streamcover.log import get_logger
from streamcover.model.checkpoint import (
    TRAIN_STATE_FORMAT,
    CheckpointError,
    atomic_torch_save,
    load_checkpoint,
    save_checkpoint,
)
from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder, load_into_deeper
from streamcover.train.batches import Chunker, PKBatchSampler
from streamcover.train.config import TrainConfig
from streamcover.train.losses import MultiLoss
from streamcover.train.tracks import TrackSet

LOSS_COLUMNS = ("total", "ce", "triplet", "lac", "lat", "map")
# Config fields a resumed run may change (they do not alter what is learned per step).
RESUMABLE_CHANGES = {"max_steps", "max_hours", "val_every_steps", "checkpoint_every_steps",
                     "threads", "device", "val_max_works"}

log = get_logger("streamcover.train")


class TrainError(Exception):
    """A run that cannot start or resume (bad config, mismatched run directory)."""


def build_encoder_config(cfg: TrainConfig) -> EncoderConfig:
    """The encoder architecture of a run: a preset plus the run's overrides (ablations)."""
    preset = EncoderConfig.compact if cfg.encoder_preset == "compact" else EncoderConfig.paper
    overrides = dict(cfg.encoder_overrides)
    overrides.setdefault("name", f"streamcover-{cfg.frontend}-{cfg.encoder_preset}")
    return preset(cfg.frontend, **overrides)


@dataclass
class ValResult:
    step: int
    map_full: float
    p10_full: float
    mr1_full: float
    map_30s: float

    @property
    def score(self) -> float:
        """Model selection: the mean of full-length and 30 s mAP, the two targets."""
        return 0.5 * (self.map_full + self.map_30s)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    elapsed_s: float
    best: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)


def validate(model: CoverEncoder, tracks: TrackSet, cfg: TrainConfig, device: torch.device,
             step: int, chunker: Chunker | None = None) -> ValResult:
    """Full-length and 30 s-query mAP on held-out works (MaxMean over chunk embeddings)."""
    emb = EncoderEmbedder(model, tracks.frames_per_second, window_s=cfg.data.window_s,
                          hop_s=cfg.data.hop_s, min_s=cfg.data.min_s, device=device,
                          chunker=chunker)
    refs = ChunkSets.from_list(emb([tracks.feature(i) for i in range(len(tracks))]))
    # Validation keeps ByteCover3's shorter-first rule, so runs stay comparable with their
    # earlier logs and plateau schedule (retrieval and `streamcover eval` score length-weighted).
    full, _ = full_length(refs, tracks.works, rule="shorter_first")
    short = short_queries(emb, tracks, refs, seconds=(30.0,), seed=cfg.seed, rule="shorter_first")
    return ValResult(step, full.map, full.p_at_10, full.mr1, short[30.0].map)


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm in train mode that normalises with batch statistics but leaves running ones."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom


def encode_groups(model: CoverEncoder, groups: list[np.ndarray], owners: list[np.ndarray],
                  device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Encode chunk-length groups and return (pooled, neck, embedding, owner) sorted by sample.

    The backbone runs one pass per length group. The first group (full windows, the
    bulk of the batch) updates BatchNorm running statistics; the small groups of short
    clips use their batch statistics without updating them, so tiny batches do not skew
    the statistics used at inference. BNNeck and the PCA-FC then run once over all
    pooled features, as ``CoverEncoder.forward`` does per pass.
    """
    pooled_parts = []
    for g, chunks in enumerate(groups):
        x = model.normalize_input(model.check_input(torch.from_numpy(chunks).unsqueeze(1).to(device)))
        x = x.contiguous(memory_format=torch.channels_last)
        ctx = frozen_bn_stats(model) if g > 0 else contextlib.nullcontext()
        with ctx:
            pooled_parts.append(model.pool(model.backbone(x)))
    owner = torch.from_numpy(np.concatenate(owners)).to(device)
    order = torch.argsort(owner, stable=True)
    pooled = torch.cat(pooled_parts)[order]
    neck = model.neck(pooled)
    emb = model.fc(neck.to(model.fc.weight.dtype))
    return pooled, neck, emb, owner[order]


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
    device = select_device(cfg.device)
    if device.type == "cpu":
        configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    enc_cfg = build_encoder_config(cfg)
    if train_tracks.n_bins != enc_cfg.in_bins:
        raise TrainError(f"training features have {train_tracks.n_bins} bins; the "
                         f"{cfg.frontend} encoder expects {enc_cfg.in_bins}")
    model = to_channels_last(CoverEncoder(enc_cfg), device)
    n_classes = int(train_tracks.labels.max()) + 1
    lc = cfg.loss
    heads = MultiLoss(
        n_classes, enc_cfg.feat_dim, enc_cfg.embed_dim, ce_weight=lc.ce_weight,
        label_smoothing=lc.label_smoothing, triplet_weight=lc.triplet_weight,
        triplet_margin=lc.triplet_margin, lac_weight=lc.lac_weight, lac_proxies=lc.lac_proxies,
        lat_weight=lc.lat_weight, lat_margin=lc.lat_margin, lat_pull_weight=lc.lat_pull_weight,
        map_weight=lc.map_weight, map_temperature=lc.map_temperature,
        global_level=lc.global_level, classifier=lc.classifier,
        cosine_scale=lc.cosine_scale, cosine_margin=lc.cosine_margin,
    ).to(device)
    tau_params = [p for n, p in heads.named_parameters() if n.endswith("tau")]
    other_heads = [p for n, p in heads.named_parameters() if not n.endswith("tau")]
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if p.requires_grad] + other_heads,
         "lr_mult": 1.0},
    ]
    if tau_params:
        groups.append({"params": tau_params, "lr_mult": lc.tau_lr_mult, "weight_decay": 0.0})
    opt = torch.optim.Adam(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    use_amp = device.type == "cuda"
    amp_dtype = gpu_autocast_dtype(device) if use_amp else torch.float32
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    if val_tracks is not None and cfg.val_max_works and val_tracks.n_works > cfg.val_max_works:
        keep = np.random.default_rng(cfg.seed).choice(
            np.unique(val_tracks.works), size=cfg.val_max_works, replace=False)
        val_tracks = val_tracks.select_works(keep)
    sampler = PKBatchSampler(train_tracks, cfg.data, cfg.augment, cfg.seed,
                             circular_pitch=cfg.frontend == "hpcp", chunker=chunker)
    state_path = run_dir / "last.pt"
    step = 0
    elapsed = 0.0
    lr_scale = 1.0
    plateau_bad = 0
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    resumed_ema: dict[str, Any] | None = None
    resumed = state_path.exists()
    if resumed:
        st = torch.load(state_path, map_location=device, weights_only=True)
        if not isinstance(st, dict) or st.get("format") != TRAIN_STATE_FORMAT:
            raise TrainError(f"{state_path} is not a streamcover training state")
        if st["encoder_config"] != enc_cfg.to_dict():
            raise TrainError(f"{state_path}: encoder config differs from this run's config")
        model.load_state_dict(st["model"])
        heads.load_state_dict(st["heads"])
        opt.load_state_dict(st["optim"])
        scaler.load_state_dict(st["scaler"])
        step, elapsed, lr_scale = int(st["step"]), float(st["elapsed_s"]), float(st["lr_scale"])
        plateau_bad = int(st["plateau_bad"])
        best = json.loads(st["best_json"]) if st["best_json"] else None
        history = json.loads(st["history_json"])
        resumed_ema = st.get("ema")
        log.info("resumed", run=str(run_dir), step=step, elapsed_h=round(elapsed / 3600, 3))
    elif init_from is not None:
        info = _warm_start(model, heads, init_from, enc_cfg, device)
        (run_dir / "init.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        log.info("initialised", run=str(run_dir), **info)
    ema = _ema_model(model, cfg.optim.ema_decay)
    if ema is not None and resumed:
        if resumed_ema is None:
            raise TrainError(f"{state_path} has no weight average; it was not started with "
                             "optim.ema_decay")
        ema.load_state_dict(resumed_ema)
    # The weights that are validated and saved as best.pt.
    evaluated: CoverEncoder = model if ema is None else ema.module  # type: ignore[assignment]

    def save_state() -> None:
        atomic_torch_save({
            "format": TRAIN_STATE_FORMAT, "config": cfg.model_dump(mode="json"),
            "encoder_config": enc_cfg.to_dict(), "step": step, "elapsed_s": elapsed,
            "lr_scale": lr_scale, "plateau_bad": plateau_bad,
            "best_json": json.dumps(best) if best else "", "history_json": json.dumps(history),
            "model": model.state_dict(), "heads": heads.state_dict(),
            "optim": opt.state_dict(), "scaler": scaler.state_dict(),
            **({"ema": ema.state_dict()} if ema is not None else {}),
            "sampler": {"seed": cfg.seed, "next_step": step},
        }, state_path)

    def run_validation() -> None:
        nonlocal best, lr_scale, plateau_bad
        if val_tracks is None or len(val_tracks) == 0:
            return
        t0 = time.time()
        vr = validate(evaluated, val_tracks, cfg, device, step, chunker)
        row = {"step": step, "elapsed_s": round(elapsed, 1), "epoch": round(epoch(), 3),
               "map_full": vr.map_full, "p10_full": vr.p10_full, "mr1_full": vr.mr1_full,
               "map_30s": vr.map_30s, "score": vr.score, "lr": current_lr(),
               "val_seconds": round(time.time() - t0, 1)}
        history.append(row)
        _append_csv(run_dir / "val_log.csv", row, list(row))
        improved = best is None or vr.score > float(best["score"])
        if improved:
            best = dict(row)
            save_checkpoint(
                run_dir / "best.pt", evaluated, enc_cfg,
                provenance={"data": data_desc, "steps": step, "epochs": round(epoch(), 3),
                            "metrics": {"val_map_full": vr.map_full, "val_map_30s": vr.map_30s,
                                        "val_p10_full": vr.p10_full, "val_mr1_full": vr.mr1_full},
                            "notes": f"run {run_dir.name}, {elapsed / 3600:.2f} h training"},
            )
            plateau_bad = 0
        else:
            plateau_bad += 1
            if plateau_bad > cfg.optim.plateau_patience:
                lr_scale = max(lr_scale * cfg.optim.plateau_factor,
                               cfg.optim.min_lr / cfg.optim.lr)
                plateau_bad = 0
        log.info("validation", step=step, map_full=round(vr.map_full, 4),
                 map_30s=round(vr.map_30s, 4), best_score=round(float(best["score"]), 4)
                 if best else None, seconds=round(time.time() - t0, 1))
        _print(f"val step {step}: full mAP {vr.map_full:.4f} P@10 {vr.p10_full:.4f} "
               f"MR1 {vr.mr1_full:.1f} | 30s mAP {vr.map_30s:.4f} | lr {current_lr():.2e}")

    def epoch() -> float:
        samples = step * cfg.data.works_per_batch * cfg.data.versions_per_work
        return samples / max(1, len(train_tracks))

    def current_lr() -> float:
        warm = min(1.0, (step + 1) / cfg.optim.warmup_steps) if cfg.optim.warmup_steps else 1.0
        return cfg.optim.lr * lr_scale * warm

    stop = _StopFlag()
    interactive = sys.stderr.isatty() if progress is None else progress
    started = time.time()
    invocation_limit = cfg.max_hours * 3600 if cfg.max_hours > 0 else math.inf
    train_cols = ["step", "elapsed_s", "epoch", "lr", "tau", "n_samples", "n_chunks",
                  "step_seconds", *LOSS_COLUMNS]
    bar_ctx = _progress(interactive, cfg.max_steps, step)
    model.train()
    heads.train()
    with stop.installed(), bar_ctx as advance:
        while step < cfg.max_steps and not stop.stop:
            if time.time() - started > invocation_limit:
                break
            t0 = time.time()
            torch.manual_seed(cfg.seed * 1_000_003 + step)
            batch = sampler.batch(step)
            labels = torch.from_numpy(batch.labels).to(device)
            lr = current_lr()
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_mult", 1.0)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                pooled, neck, embedding, owner = encode_groups(model, batch.groups,
                                                               batch.owners, device)
                terms = heads(pooled, neck, embedding, owner, labels)
            loss = terms["total"]
            if not torch.isfinite(loss):
                raise TrainError(f"loss became {loss.item()} at step {step}; lower optim.lr")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(
                [p for g in opt.param_groups for p in g["params"]], cfg.optim.grad_clip)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            dt = time.time() - t0
            elapsed += dt
            row: dict[str, Any] = {
                "step": step, "elapsed_s": round(elapsed, 1), "epoch": round(epoch(), 4),
                "lr": lr, "tau": float(heads.proxy.tau.item()) if heads.proxy is not None else "",
                "n_samples": batch.n_samples, "n_chunks": batch.total_chunks,
                "step_seconds": round(dt, 3),
            }
            row.update({k: round(float(v.item()), 5) for k, v in terms.items()})
            _append_csv(run_dir / "train_log.csv", row, train_cols)
            advance(step, float(loss.item()))
            if not interactive and step % 10 == 0:
                _print(f"step {step} loss {float(loss.item()):.4f} "
                       + " ".join(f"{k} {float(v.item()):.3f}" for k, v in terms.items()
                                  if k != "total")
                       + f" chunks {batch.total_chunks} {dt:.2f}s/step lr {lr:.2e}")
            if step % cfg.val_every_steps == 0:
                t_val = time.time()
                run_validation()
                elapsed += time.time() - t_val
                model.train()
            if step % cfg.checkpoint_every_steps == 0:
                save_state()
    save_state()
    return TrainResult(run_dir=run_dir, steps=step, elapsed_s=elapsed, best=best, history=history)


def _ema_model(model: CoverEncoder, decay: float) -> AveragedModel | None:
    """The moving average of ``model``'s weights and BatchNorm statistics, or None (off).

    Its first update copies the model (so a warm start's weights are where it begins)."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _encoder_state(state: dict[str, Any]) -> dict[str, Tensor]:
    """A training state's encoder weights: the moving average when the run kept one (it is
    what the run validated and saved as best.pt), else the trained weights."""
    if "ema" not in state:
        return dict(state["model"])
    prefix = "module."
    return {k[len(prefix):]: v for k, v in state["ema"].items() if k.startswith(prefix)}


def _warm_start(model: CoverEncoder, heads: nn.Module, source: Path, enc_cfg: EncoderConfig,
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
# seed a run at another (the seventh session's finer time axis). More blocks per stage
# start as identities (``load_into_deeper``): the eighth session's deeper encoder.
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


def _print(msg: str) -> None:
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


@contextlib.contextmanager
def _progress(enabled: bool, total: int, start: int) -> Iterator[Any]:
    """A rich progress bar on a terminal; a no-op callable otherwise (logs carry progress)."""
    if not enabled:
        yield lambda step, loss: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                  TimeRemainingColumn(), transient=False) as prog:
        task = prog.add_task("train", total=total, completed=start, loss=float("nan"))

        def advance(step: int, loss: float) -> None:
            prog.update(task, completed=step, loss=loss)

        yield advance


def load_best_model(run_dir: Path) -> CoverEncoder:
    """The best encoder of a run (for eval and shipping)."""
    from streamcover.model.checkpoint import load_checkpoint

    return load_checkpoint(Path(run_dir) / "best.pt").model


