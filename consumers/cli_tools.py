"""Handlers of ``streamcover send``, ``mic`` and ``setlist``: called by ``consumers.commands``
(``send.py``, ``mic.py``, and ``monitor.py`` for setlist); kept apart so ``--help`` does not import aiokafka."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

from consumers.producer import (
    capture_mic,
    default_stream_id,
    list_devices,
    request_setlist,
    send_files,
)
from streamcover.config import get_settings
from streamcover.events import MatchEvent, SourceKind, decode


def send_main(args: argparse.Namespace) -> int:
    settings = get_settings()
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"streamcover send: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    source: SourceKind = args.source or ("live" if args.realtime else "upload")
    from streamcover.audio.decode import AudioDecodeError

    try:
        sent = asyncio.run(send_files(settings, list(args.files), args.stream_id, source, args.realtime))
    except AudioDecodeError as exc:
        print(f"streamcover send: {exc}", file=sys.stderr)
        return 2
    for sid, n in sent:
        print(f"{sid}\t{n} frames")
    return 0


def mic_main(args: argparse.Namespace) -> int:
    if args.list_devices:
        print(list_devices())
        return 0
    settings = get_settings()
    latency: str | float = args.latency
    with contextlib.suppress(ValueError):
        latency = float(args.latency)
    sid = args.stream_id or default_stream_id(None)

    async def _main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await capture_mic(settings, sid, device=args.device, block_seconds=args.block_seconds,
                                 latency=latency, sample_rate=args.sample_rate, stop=stop,
                                 max_seconds=args.seconds)

    n = asyncio.run(_main())
    print(f"{sid}\t{n} frames")
    return 0


def setlist_main(args: argparse.Namespace) -> int:
    settings = get_settings()

    async def _main() -> MatchEvent | None:
        from aiokafka import AIOKafkaConsumer

        from consumers.kafka import consumer_kwargs

        consumer = AIOKafkaConsumer(settings.kafka.match_topic,
                                    **consumer_kwargs(settings.kafka, group_id=None, auto_offset_reset="latest"))
        await consumer.start()
        try:
            await consumer.seek_to_end()
            await request_setlist(settings, args.stream_id)
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                got = await consumer.getmany(timeout_ms=500)
                for msgs in got.values():
                    for m in msgs:
                        ev = decode(m.value, MatchEvent)
                        if ev.kind == "setlist" and ev.stream_id == args.stream_id:
                            return ev
            return None
        finally:
            await consumer.stop()

    ev = asyncio.run(_main())
    if ev is None:
        print(f"streamcover setlist: no answer for {args.stream_id!r} (is the stream open?)", file=sys.stderr)
        return 1
    from consumers.render import print_setlist

    print_setlist(ev)
    return 0
