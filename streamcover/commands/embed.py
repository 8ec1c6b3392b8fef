"""`streamcover embed FILE`: chunk embeddings of one recording, for inspection and scripts.

Prints the model id, the number of chunks and each chunk's start time; ``--out X.npy``
saves the vectors [N, 512] (float32, L2-normalised) and ``X.starts.npy`` the start times.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="embed one audio/video file into 512-d chunk vectors",
        description="Decode FILE, compute its features, cut 20 s chunks every 10 s and embed "
        "them with the encoder checkpoint (settings.encoder.model_path by default).",
    )
    p.add_argument(
        "file", type=Path, help="audio or short-video file (wav, flac, mp3, ogg, m4a, mp4, ...)"
    )
    p.add_argument("--model", type=Path, default=None, help="encoder checkpoint (.pt)")
    p.add_argument(
        "--untrained",
        choices=["compact-hpcp", "compact-cqt", "paper-hpcp", "paper-cqt"],
        default=None,
        help="use a randomly initialised encoder instead of a checkpoint (baselines)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --untrained")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--out", type=Path, default=None, help="save vectors to this .npy file")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from streamcover.audio.decode import AudioDecodeError
    from streamcover.cli import CliError
    from streamcover.config import PROJECT_ROOT, get_settings
    from streamcover.model.checkpoint import CheckpointError
    from streamcover.model.config import EncoderConfig
    from streamcover.model.inference import Encoder

    settings = get_settings()
    device = args.device  # None -> settings.encoder.device
    if args.out is not None and args.out.suffix != ".npy":
        raise CliError(f"--out {args.out}: expected a .npy path")
    if args.untrained:
        preset, frontend = args.untrained.split("-")
        cfg = getattr(EncoderConfig, preset)(frontend)
        encoder = Encoder.untrained(cfg, seed=args.seed, device=device, settings=settings)
    else:
        path = args.model or settings.encoder.model_path
        if not path.is_absolute() and not path.exists():
            path = PROJECT_ROOT / path
        if not path.exists():
            raise CliError(
                f"encoder checkpoint {path} not found: pass --model PATH "
                "(or --untrained compact-hpcp for a random baseline)"
            )
        try:
            encoder = Encoder.from_checkpoint(path, device=device, settings=settings)
        except CheckpointError as exc:
            raise CliError(str(exc)) from exc
    try:
        emb = encoder.embed(args.file)
    except AudioDecodeError as exc:
        raise CliError(str(exc)) from exc
    print(f"model: {encoder.model_id}")
    print(f"file: {args.file} ({emb.duration_s:.1f} s, front-end {encoder.cfg.frontend})")
    print(f"chunks: {len(emb)}")
    if len(emb) == 0:
        print(
            f"(shorter than audio.min_clip_seconds = {settings.audio.min_clip_seconds:g} s: "
            "nothing to embed)"
        )
    for i, start in enumerate(emb.starts):
        print(f"  {i:4d}  start {start:8.2f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.out, emb.vectors)
        starts_path = args.out.with_suffix(".starts.npy")
        np.save(starts_path, emb.starts)
        print(f"saved {emb.vectors.shape} vectors to {args.out} and starts to {starts_path}")
    return 0
