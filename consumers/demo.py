"""`streamcover demo`: the whole product on one machine, end to end, in a few minutes.

1. starts a local Kafka broker (``consumers.broker``; jars fetched once into the cache);
2. renders five short works (consumers/media.py) and builds a catalog from them with the
   encoder the monitor uses (the shipped model if present, else an untrained one: said loudly);
3. starts the monitor in-process;
4. streams (a) a cover clip of a catalogued work, (b) an unrelated recording and (c) a
   live-style stream playing three catalogued works back to back;
5. prints the match events as they arrive and the live stream's set list.

With the untrained encoder only near-identical audio is recognised, so the "cover" is then
a new recording of the same arrangement (other level, noise), songs in the live set start on
the window grid, and the thresholds are the ones measured for that encoder; with a trained
model the cover is transposed, faster and played with another timbre.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.panel import Panel

from consumers.media import Score, Version, make_score, render
from consumers.render import print_event, print_setlist
from streamcover.audio.resample import StreamResampler
from streamcover.config import Settings, get_settings
from streamcover.events import MatchEvent, decode

console = Console()

WORKS = [
    ("Harbour Lights", "The Lantern Club"),
    ("Seven Bridges", "Mira Okafor"),
    ("Paper Crowns", "North Quarter"),
    ("Slow Comet", "Elsie & The Tides"),
    ("Juniper Road", "The Fold"),
]
UNTRAINED_MATCH = {"threshold": 0.9985, "one_chunk_threshold": 0.9985, "release_threshold": 0.9975, "live_threshold": 0.9985,
                   "chunk_threshold": 0.9975, "change_margin": 0.002, "update_min_delta": 0.0005}


def build_catalog(path: Path, encoder: Any, works: dict[str, tuple[Score, str]], settings: Settings,
                  rate: int) -> None:
    """Embed each work's reference rendering on the catalog's reference grid (with its speed
    renders), store its features for stage 3, and index it (what ``catalog add`` does for files)."""
    from streamcover.catalog.factory import IndexParams
    from streamcover.catalog.ingest import embed_reference
    from streamcover.catalog.records import ReferenceInput
    from streamcover.catalog.snapshot import build_snapshot
    from streamcover.catalog.store import Catalog

    fe = encoder.frontend
    hop = settings.catalog.reference_hop_seconds
    speeds = settings.catalog.reference_speeds
    refs = []
    for rid, (score, artist) in works.items():
        wave = render(score, Version(), rate)
        # The monitor's own resampler, so references and streams share one signal path.
        up = StreamResampler(rate, fe.sample_rate).push(np.concatenate([wave, np.zeros(rate // 10, np.float32)]))
        emb = embed_reference(encoder, up[: len(wave) * fe.sample_rate // rate], hop_seconds=hop, speeds=speeds)
        refs.append(ReferenceInput(id=rid, vectors=emb.vectors, starts=emb.starts, title=score.title,
                                   artist=artist, duration=len(wave) / rate, features=emb.features))
    with Catalog.open(path, "a", model_id=encoder.model_id, dim=int(refs[0].vectors.shape[1])) as cat:
        cat.add_references(refs, encoder.model_id, reference_hop_s=hop, reference_speeds=speeds,
                           feature_fps=fe.frames_per_second)
        build_snapshot(cat, IndexParams.from_settings(settings.catalog))


async def _demo(args: argparse.Namespace) -> int:
    from consumers.broker import KafkaBroker
    from consumers.monitor import Monitor
    from consumers.producer import kafka_producer, send_waveforms
    from streamcover.model.loading import load_encoder
    from streamcover.monitor.engine import build_engine

    base = get_settings()
    if not args.verbose:  # the demo speaks through its own output; service logs only on trouble
        from streamcover.log import configure_logging

        configure_logging("warning", "console")
    work_dir = Path(tempfile.mkdtemp(prefix="streamcover-demo-"))
    console.print(Panel.fit("streamcover demo: broker → catalog → monitor → three streams", style="bold"))
    t0 = time.monotonic()
    with console.status("starting the local Kafka broker (first run fetches the jars) ..."):
        broker = await asyncio.to_thread(KafkaBroker(startup_timeout_s=180).start)
    try:
        console.print(f"broker up at {broker.bootstrap_servers} ({time.monotonic() - t0:.0f} s)")
        tag = f"demo-{int(time.time())}"
        kafka = broker.client_settings(
            audio_topic=f"{tag}.audio", match_topic=f"{tag}.matches", dead_letter_topic=f"{tag}.dead-letter",
            state_topic=f"{tag}.state", group_id=f"{tag}-monitor", transactional_id_prefix=tag,
            audio_partitions=3,
        )
        encoder, trained = load_encoder(base, allow_untrained=True)
        if trained:
            console.print(f"encoder: shipped model [bold]{encoder.model_id}[/]")
            match = base.match
        else:
            console.print(Panel.fit(
                f"No shipped model at {base.encoder.model_path}: using an UNTRAINED encoder "
                f"({encoder.model_id}).\nIt recognises only near-identical audio, so the 'cover' below "
                "is a new recording of the same arrangement, not a transposed cover.",
                style="bold yellow"))
            match = base.match.model_copy(update=UNTRAINED_MATCH)
        settings = base.model_copy(update={
            "kafka": kafka, "match": match,
            "catalog": base.catalog.model_copy(update={"path": work_dir / "catalog"}),
            "monitor": base.monitor.model_copy(update={"metrics_port": 0}),
        })
        rate = settings.audio.wire_sample_rate
        works = {f"work-{i}": (make_score(300 + i, 75.0, title=t), a) for i, (t, a) in enumerate(WORKS)}
        with console.status("rendering 5 works and building the catalog ..."):
            await asyncio.to_thread(build_catalog, settings.catalog.path, encoder, works, settings, rate)
        console.print(f"catalog: {len(works)} works at {settings.catalog.path}")

        hop = round(settings.audio.hop_seconds * 2.1533) * 10_240 * rate // 22_050
        if trained:
            cover = render(works["work-1"][0], Version(transpose=2, tempo=1.06, timbre=1, gain=0.4), rate, 45.0)
            live_parts = [render(works[f"work-{i}"][0], Version(transpose=-1, timbre=2, gain=0.45), rate, 50.0)
                          for i in (3, 0, 2)]
        else:
            cover = render(works["work-1"][0], Version(gain=0.35, noise=0.002, seed=1), rate, 45.0)
            live_parts = [render(works[f"work-{i}"][0], Version(gain=0.4, noise=0.002, seed=i), rate,
                                 5 * hop / rate) for i in (3, 0, 2)]
        unrelated = render(make_score(4242, 45.0), Version(timbre=3, gain=0.4), rate)
        streams = {
            "upload-cover": (cover, "upload", f"a cover clip of “{WORKS[1][0]}”"),
            "upload-unrelated": (unrelated, "upload", "an unrelated recording"),
            "live-set": (np.concatenate(live_parts), "live",
                         f"a live set: {WORKS[3][0]}, {WORKS[0][0]}, {WORKS[2][0]}"),
        }

        monitor = Monitor(settings, build_engine(settings, encoder, trained))
        stop = asyncio.Event()
        await monitor.start()
        run = asyncio.create_task(monitor.run(stop))
        events: list[MatchEvent] = []
        try:
            speed = None if args.realtime else args.speed
            for sid, (_, _, what) in streams.items():
                console.print(f"streaming [bold]{sid}[/]: {what}")
            async with kafka_producer(settings) as producer:
                senders = [asyncio.create_task(_send_paced(settings, sid, wave, src, speed, producer, send_waveforms))
                           for sid, (wave, src, _) in streams.items()]
                events = await _follow(settings, set(streams), timeout=args.timeout)
                await asyncio.gather(*senders)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(run, 60)
            await monitor.stop()
        live = [e for e in events if e.stream_id == "live-set" and e.kind == "setlist"]
        if live:
            print_setlist(live[-1], console)
        problems = _check(events, live)
        for p in problems:
            console.print(f"[red]{p}[/]")
        console.print(("[green]done[/]" if not problems else "[red]demo failed[/]")
                      + f" in {time.monotonic() - t0:.0f} s")
        return 0 if not problems else 1
    finally:
        await asyncio.to_thread(broker.stop)


def _check(events: list[MatchEvent], setlists: list[MatchEvent]) -> list[str]:
    """What the demo promises: the cover found as its work, silence on the unrelated upload,
    and the live set's three works in order."""
    problems = []
    cover = [e.reference_id for e in events if e.kind == "match" and e.stream_id == "upload-cover"]
    if cover[:1] != ["work-1"]:
        problems.append(f"the cover was not recognised as work-1 (matches: {cover})")
    if any(e.kind == "match" and e.stream_id == "upload-unrelated" for e in events):
        problems.append("the unrelated upload was matched")
    played = [item.reference_id for item in setlists[-1].setlist] if setlists else []
    if played != ["work-3", "work-0", "work-2"]:
        problems.append(f"the live set list is {played}, not work-3, work-0, work-2")
    return problems


async def _send_paced(settings: Settings, sid: str, wave: np.ndarray, source: Any, speed: float | None,
                      producer: Any, send_waveforms: Any) -> None:
    rate = settings.audio.wire_sample_rate
    block = rate // 2

    def blocks() -> Any:
        for i in range(0, len(wave), block):
            yield wave[i : i + block]

    if speed is None:  # real time: the publisher paces itself
        await send_waveforms(settings, sid, blocks(), rate, source, realtime=True, producer=producer)
        return
    from consumers.producer import FramePublisher

    pub = FramePublisher(producer, settings, sid, source, rate)
    t0 = time.monotonic()
    for n, b in enumerate(blocks()):
        await pub.push(b)
        await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.5 / speed - time.monotonic()))
    await pub.close()


async def _follow(settings: Settings, streams: set[str], timeout: float) -> list[MatchEvent]:
    """Print committed events as they arrive, until every stream has ended."""
    from aiokafka import AIOKafkaConsumer

    from consumers.kafka import consumer_kwargs

    consumer = AIOKafkaConsumer(settings.kafka.match_topic, **consumer_kwargs(settings.kafka, group_id=None))
    await consumer.start()
    events: list[MatchEvent] = []
    done: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while done != streams and time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=500)
            for msgs in got.values():
                for m in msgs:
                    ev = decode(m.value, MatchEvent)
                    events.append(ev)
                    if ev.kind != "setlist":
                        print_event(ev, console)
                    if ev.kind == "final" or (ev.kind == "setlist" and ev.source == "live"):
                        done.add(ev.stream_id)
    finally:
        await consumer.stop()
    return events


def main(args: argparse.Namespace) -> int:
    """Entry point of ``streamcover demo``."""
    return asyncio.run(_demo(args))
