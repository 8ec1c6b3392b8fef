"""`streamcover mic`: capture a PortAudio input device and publish it as a live stream."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mic",
        help="capture a microphone (sounddevice/PortAudio) as a live stream; Ctrl-C stops",
    )
    p.add_argument("--device", default=None, help="input device index or name (default: system default)")
    p.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("--stream-id", default=None, help="stream id (default: mic-<random>)")
    p.add_argument("--block-seconds", type=float, default=0.5, help="capture block length (s)")
    p.add_argument("--latency", default="high",
                   help="PortAudio latency: 'low', 'high' or seconds (default: high)")
    p.add_argument("--sample-rate", type=int, default=None, help="capture rate (default: audio.wire_sample_rate)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this much audio")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from consumers.cli_tools import mic_main

    return mic_main(args)
