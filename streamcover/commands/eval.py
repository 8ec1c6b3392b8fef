"""`streamcover eval`: full-length and short-query retrieval figures of a checkpoint.

Examples::

    streamcover eval --checkpoint models/streamcover-hpcp-compact.pt \\
        --shs /work/shared/data/shs100k_test_hpcp_u8.npz \\
        --split-file ops/train/shs100k-test-split.json --split test --baselines untrained,2dftm
    streamcover eval --checkpoint best.pt --manifest held_out.csv

Prints tables, and writes ``<out>/eval.json`` and ``<out>/eval.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def score_rules() -> list[str]:
    """The values ``catalog.score_rule`` accepts (config stays the one list)."""
    from typing import get_args

    from streamcover.config import CatalogSettings

    return list(get_args(CatalogSettings.model_fields["score_rule"].annotation))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint (full-length and short queries)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="encoder checkpoint (default: settings encoder.model_path)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--shs", type=Path, default=None, help="SHS100K HPCP npz")
    src.add_argument("--manifest", type=Path, default=None, help="CSV/JSONL manifest to evaluate")
    p.add_argument("--split-file", type=Path, default=Path("ops/train/shs100k-test-split.json"))
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--baselines", default="untrained,2dftm",
                   help="comma list of untrained, 2dftm (or 'none')")
    p.add_argument("--no-model", action="store_true", help="evaluate the baselines only")
    p.add_argument("--durations", default="6,10,15,20,25,30,40,50,60",
                   help="short-query lengths in seconds ('' = full length only)")
    p.add_argument("--ftm-pca", type=int, default=50,
                   help="PCA dims of the 2DFTM baseline, fitted on the train split (0 = none)")
    p.add_argument("--limit-works", type=int, default=None, help="evaluate only N works")
    p.add_argument("--seed", type=int, default=0, help="seed of the query clip offsets")
    p.add_argument("--score-rule", choices=score_rules(), default=None,
                   help="how both MaxMean directions make a score (default: catalog.score_rule, "
                        "the rule retrieval uses)")
    p.add_argument("--hop-seconds", type=float, default=None,
                   help="chunk hop of queries and references (default: settings "
                        "audio.hop_seconds, what the catalog and the monitor use)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: ~/.cache/streamcover/eval/<checkpoint name>)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from streamcover.cli import CliError
    from streamcover.config import PROJECT_ROOT, get_settings
    from streamcover.data.tracks import TrackSet
    from streamcover.device import configure_threads, select_device
    from streamcover.eval.baselines import Ftm2dEmbedder
    from streamcover.eval.embedders import EncoderEmbedder
    from streamcover.eval.protocols import SetEmbedder
    from streamcover.eval.report import evaluate_system, render_tables, save_json, save_plot
    from streamcover.model.checkpoint import CheckpointError, load_checkpoint
    from streamcover.model.net import CoverEncoder

    settings = get_settings()
    rule = args.score_rule or settings.catalog.score_rule
    device = select_device(args.device)
    if device.type == "cpu":
        configure_threads(args.threads)
    ckpt_path = args.checkpoint or settings.encoder.model_path
    if not ckpt_path.is_absolute() and not ckpt_path.exists():
        ckpt_path = PROJECT_ROOT / ckpt_path
    try:
        loaded = load_checkpoint(ckpt_path, map_location=device)
    except CheckpointError as exc:
        raise CliError(str(exc)) from exc
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip() and b != "none"]
    unknown = set(baselines) - {"untrained", "2dftm"}
    if unknown:
        raise CliError(f"unknown baselines {sorted(unknown)}; use untrained, 2dftm")
    try:
        durations = [float(x) for x in args.durations.split(",") if x.strip()]
    except ValueError as exc:
        raise CliError(f"--durations must be numbers: {exc}") from exc

    train_part: TrackSet | None = None
    try:
        if args.manifest is not None:
            from streamcover.train.manifest import manifest_tracks, read_manifest

            tracks = manifest_tracks(read_manifest(args.manifest), loaded.cfg.frontend, settings)
            data_desc = f"manifest {args.manifest}"
        else:
            from streamcover.data.shs import DEFAULT_SHS_PATH, load_shs, read_split, split_tracks

            shs = args.shs or DEFAULT_SHS_PATH
            data = load_shs(shs)
            split_file = args.split_file
            if not split_file.exists() and not split_file.is_absolute():
                split_file = PROJECT_ROOT / split_file
            split = read_split(split_file)
            tracks = split_tracks(data.tracks, split, args.split)
            train_part = split_tracks(data.tracks, split, "train")
            data_desc = f"{shs.name} {args.split} split of {args.split_file.name}"
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if args.limit_works:
        works = np.unique(tracks.works)[: args.limit_works]
        tracks = tracks.select_works(works)
    if tracks.n_bins != loaded.cfg.in_bins:
        raise CliError(f"features have {tracks.n_bins} bins; {ckpt_path.name} expects "
                       f"{loaded.cfg.in_bins} ({loaded.cfg.frontend})")

    hop_s = args.hop_seconds if args.hop_seconds is not None else settings.audio.hop_seconds
    if not 0 < hop_s <= settings.audio.window_seconds:
        raise CliError(f"--hop-seconds must be in (0, {settings.audio.window_seconds}], got {hop_s}")
    window_s, min_s = settings.audio.window_seconds, settings.audio.min_clip_seconds
    systems: dict[str, SetEmbedder] = {}
    if not args.no_model:
        systems[f"model ({loaded.model_id})"] = EncoderEmbedder(
            loaded.model, tracks.frames_per_second, device=device, window_s=window_s,
            hop_s=hop_s, min_s=min_s)
    if "untrained" in baselines:
        import torch

        torch.manual_seed(args.seed)
        untrained = CoverEncoder(loaded.cfg).to(device).eval()
        systems["untrained encoder"] = EncoderEmbedder(untrained, tracks.frames_per_second,
                                                       device=device, window_s=window_s,
                                                       hop_s=hop_s, min_s=min_s)
    if "2dftm" in baselines:
        if loaded.cfg.frontend != "hpcp":
            print("2DFTM baseline needs chroma (HPCP) features; skipped for", loaded.cfg.frontend)
        else:
            ftm = Ftm2dEmbedder(pca_dims=args.ftm_pca if train_part is not None else 0)
            if train_part is not None and args.ftm_pca > 0:
                fit = train_part.subset(np.arange(0, len(train_part), 4))  # every 4th: enough
                ftm.fit_pca([fit.feature(i) for i in range(len(fit))])
            systems["2DFTM" + (f" (PCA {ftm.pca_dims})" if ftm.components is not None else "")] = ftm

    results: dict[str, dict[str, Any]] = {}
    for name, embed in systems.items():
        print(f"evaluating {name} on {len(tracks)} recordings of {tracks.n_works} works ...",
              flush=True)
        results[name] = evaluate_system(embed, tracks, durations, seed=args.seed,
                                        short=bool(durations), rule=rule)
    title = f"{data_desc} ({tracks.n_works} works, {len(tracks)} recordings)"
    render_tables(results, title)
    out_dir = args.out or settings.cache_dir / "eval" / ckpt_path.stem
    doc = {"checkpoint": str(ckpt_path), "model_id": loaded.model_id, "data": data_desc,
           "works": tracks.n_works, "recordings": len(tracks), "durations_s": durations,
           "clip_seed": args.seed, "similarity": "MaxMean over L2-normalised chunk embeddings",
           "score_rule": rule, "window_s": window_s, "hop_s": hop_s,
           "results": results}
    save_json(doc, out_dir / "eval.json")
    save_plot(results, out_dir / "eval.png", f"{tracks.n_works} held-out works")
    print(f"wrote {out_dir / 'eval.json'} and {out_dir / 'eval.png'}")
    return 0
