"""`streamcover send`: publish audio/video files as frames to the audio topic."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "send",
        help="publish audio/video files to the audio topic (one stream per file, or one --stream-id)",
        description="Decode any audio or video file (ffmpeg via PyAV) and publish it as AudioFrames "
        "keyed by the stream id, ending with an end-of-stream frame.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--stream-id", default=None,
                   help="send all files, in order, as ONE stream with this id (e.g. a live set)")
    p.add_argument("--source", choices=["upload", "live"], default=None,
                   help="stream kind (default: live with --realtime, else upload)")
    p.add_argument("--realtime", action="store_true", help="pace frames at playback speed")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from consumers.cli_tools import send_main

    return send_main(args)
