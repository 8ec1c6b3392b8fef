"""`streamcover train`: train the cover encoder on SHS100K HPCP features or a manifest.

Examples::

    streamcover train --shs /work/shared/data/shs100k_test_hpcp_u8.npz \\
        --split ops/train/shs100k-test-split.json --config ops/train/hpcp-compact.json --run hpcp1
    streamcover train --manifest train.csv --val-manifest val.csv --config ops/train/cqt-compact.json

Re-running the same command resumes the run from its last checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamcover.config import Settings
    from streamcover.data.tracks import TrackSet


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train the cover encoder (resumable)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shs", type=Path, help="SHS100K HPCP npz (../shared/data)")
    p.add_argument("--manifest", type=Path,
                   help="CSV/JSONL manifest of training recordings; with --shs, they are "
                        "trained on together (validation stays the SHS val split unless "
                        "--val-manifest is given too)")
    p.add_argument("--split", type=Path, default=None,
                   help="split JSON for --shs (created with --split-seed if missing)")
    p.add_argument("--split-seed", type=int, default=20261123)
    p.add_argument("--val-manifest", type=Path, default=None,
                   help="manifest of validation recordings (with --manifest)")
    p.add_argument("--config", type=Path, required=True, help="training config (JSON/YAML)")
    p.add_argument("--run", default=None, help="run name (default: the config's name)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="where runs live (default: ~/.cache/streamcover/runs)")
    p.add_argument("--max-steps", type=int, default=None, help="override config max_steps")
    p.add_argument("--max-hours", type=float, default=None, help="override config max_hours")
    p.add_argument("--limit-works", type=int, default=None,
                   help="use only the first N works of --shs (smoke tests)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="warm-start a new run from another run's last.pt or a shipped model .pt "
                        "(ignored on resume)")
    p.add_argument("--no-progress", action="store_true", help="plain log lines, no progress bar")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from streamcover.cli import CliError
    from streamcover.config import get_settings
    from streamcover.train.config import load_train_config
    from streamcover.train.loop import TrainError, train

    settings = get_settings()
    try:
        cfg = load_train_config(args.config)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    updates = {}
    if args.max_steps is not None:
        updates["max_steps"] = args.max_steps
    if args.max_hours is not None:
        updates["max_hours"] = args.max_hours
    if updates:
        cfg = cfg.model_copy(update=updates)
    runs_dir = args.runs_dir or settings.train.runs_dir
    run_dir = Path(runs_dir) / (args.run or cfg.name)
    val_tracks: TrackSet | None
    if args.shs is None and args.manifest is None:
        raise CliError("give --shs, --manifest or both")
    try:
        if args.shs is not None and args.manifest is not None:
            train_tracks, val_tracks, desc = _mixed_data(args, cfg.frontend, settings)
        elif args.shs is not None:
            train_tracks, val_tracks, desc = _shs_data(args, cfg.frontend)
        else:
            train_tracks, val_tracks, desc = _manifest_data(args, cfg.frontend, settings)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(f"run {run_dir}: {len(train_tracks)} training recordings of {train_tracks.n_works} "
          f"works; {len(val_tracks) if val_tracks else 0} validation recordings", flush=True)
    try:
        result = train(cfg, train_tracks, val_tracks, run_dir, data_desc=desc,
                       progress=False if args.no_progress else None, init_from=args.init_from)
    except TrainError as exc:
        raise CliError(str(exc)) from exc
    best = result.best
    print(f"stopped at step {result.steps} after {result.elapsed_s / 3600:.2f} h; best: "
          + (f"step {best['step']} full mAP {best['map_full']:.4f} 30 s mAP {best['map_30s']:.4f}"
             if best else "none (no validation yet)"), flush=True)
    return 0


def _shs_data(args: argparse.Namespace, frontend: str) -> tuple[TrackSet, TrackSet, str]:
    from streamcover.data.shs import load_shs, make_split, read_split, split_tracks, write_split

    if frontend != "hpcp":
        raise ValueError("--shs holds HPCP features; use a config with frontend 'hpcp'")
    data = load_shs(args.shs, limit_works=args.limit_works)
    split_path = args.split
    if split_path is None:
        raise ValueError("--shs needs --split FILE (it is created if it does not exist)")
    if split_path.exists():
        split = read_split(split_path)
    else:
        split = make_split(data.tracks.works, seed=args.split_seed)
        write_split(split_path, split, seed=args.split_seed, source=args.shs.name,
                    dropped=data.dropped, tracks=data.tracks)
    train_tracks = split_tracks(data.tracks, split, "train")
    val_tracks = split_tracks(data.tracks, split, "val")
    if len(train_tracks) == 0:
        raise ValueError(f"split {split_path} leaves no training recordings in {args.shs}")
    desc = (f"SHS100K-TEST HPCP ({args.shs.name}), train split of {split_path.name} "
            f"({train_tracks.n_works} works, {len(train_tracks)} recordings)")
    return train_tracks, val_tracks, desc


def _manifest_data(args: argparse.Namespace, frontend: str,
                   settings: Settings) -> tuple[TrackSet, TrackSet | None, str]:
    from streamcover.train.manifest import manifest_tracks, read_manifest

    train_tracks = manifest_tracks(read_manifest(args.manifest), frontend, settings)
    val_tracks = (manifest_tracks(read_manifest(args.val_manifest), frontend, settings)
                  if args.val_manifest else None)
    desc = f"manifest {args.manifest.name} ({train_tracks.n_works} works, {len(train_tracks)} recordings)"
    return train_tracks, val_tracks, desc


def _mixed_data(args: argparse.Namespace, frontend: str,
                settings: Settings) -> tuple[TrackSet, TrackSet | None, str]:
    """SHS train split plus the manifest's recordings; SHS val (plus --val-manifest)."""
    from streamcover.data.tracks import TrackSet

    shs_train, shs_val, shs_desc = _shs_data(args, frontend)
    man_train, man_val, man_desc = _manifest_data(args, frontend, settings)
    train_tracks = TrackSet.concat([shs_train, man_train])
    val_tracks = TrackSet.concat([shs_val, man_val]) if man_val is not None else shs_val
    return train_tracks, val_tracks, f"{shs_desc}; plus {man_desc}"
