"""Benchmark: concurrent real-time live streams through the real broker, and threshold calibration.

Throughput/latency (default): starts a local broker, builds a catalog of synthetic works
with the encoder the monitor would use (the shipped model if present, else the untrained
one: printed), runs ``streamcover monitor`` as its own process, then sends N live streams in
real time (0.5 s frames) for each N of ``--streams``. Every window of every stream emits an
update event (update thresholds set to 0), so the latency from window close (the producer's
send time of the frame that completes the window) to the event being visible to a
read_committed consumer is measured for every window. A level is "sustained" when the
p99 latency stays ≤ ``--p99-target`` and the consumer lag does not grow. Each level also
prints the 1-minute load average at its end (``load1``: the machine is shared). The monitor runs
with the service's default torch threads (``monitor.torch_threads`` = 1) unless ``--threads``.

Calibration (``--calibrate``): MaxMean scores of covers (transposed, faster, other timbre)
and of unrelated works against the catalog, per 20 s window query of 1..6 chunks, and the
false-alarm rate per stream-hour each threshold implies (one decision per 10 s hop:
360 per hour; rate = 360 · P(unrelated score ≥ threshold)).

    nice -n 10 .venv/bin/python ops/bench/bench_monitor.py --streams 10,20,40 --seconds 60
    nice -n 10 .venv/bin/python ops/bench/bench_monitor.py --calibrate
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from consumers.demo import UNTRAINED_MATCH, build_catalog  # noqa: E402
from consumers.media import Version, make_score, render  # noqa: E402
from streamcover.config import Settings, get_settings  # noqa: E402

HOP_FRAMES = 22


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _level(settings: Settings, n: int, seconds: float, waves: list[np.ndarray]) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    from consumers.kafka import consumer_kwargs
    from consumers.producer import FramePublisher, kafka_producer
    from streamcover.events import MatchEvent, decode

    rate = settings.audio.wire_sample_rate
    frame = rate // 2
    tag = f"n{n}-{int(time.time())}"
    latencies: list[float] = []
    consumer = AIOKafkaConsumer(settings.kafka.match_topic, **consumer_kwargs(settings.kafka, group_id=None,
                                                                             auto_offset_reset="latest"))
    await consumer.start()
    await consumer.seek_to_end()
    stop = asyncio.Event()

    async def collect() -> None:
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for msgs in got.values():
                for m in msgs:
                    ev = decode(m.value, MatchEvent)
                    if ev.stream_id.startswith(tag) and ev.kind in ("match", "update", "setlist_segment"):
                        closed = ev.emitted_at - ev.latency_ms / 1000.0
                        latencies.append(now - closed)

    col = asyncio.create_task(collect())
    behind: list[float] = []
    async with kafka_producer(settings) as producer:
        pubs = [FramePublisher(producer, settings, f"{tag}-{i}", "live", rate) for i in range(n)]
        hop = HOP_FRAMES * 10_240 * rate // 22_050  # start each stream on the window grid
        offsets = [(i % 5) * hop for i in range(n)]
        t0 = time.monotonic()
        steps = int(seconds * 2)
        for k in range(steps):
            due = t0 + (k + 1) * 0.5
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            behind.append(time.monotonic() - due)
            for i, pub in enumerate(pubs):
                w = waves[i % len(waves)]
                a = (offsets[i] + k * frame) % (len(w) - len(w) % frame)
                await pub.push(w[a : a + frame])
        await producer.flush()
    await asyncio.sleep(5.0)
    stop.set()
    await col
    await consumer.stop()
    return {
        "streams": n, "seconds": seconds, "events": len(latencies),
        "p50_s": round(_pct(latencies, 0.5), 3), "p99_s": round(_pct(latencies, 0.99), 3),
        "max_s": round(max(latencies), 3) if latencies else None,
        "producer_behind_p99_s": round(_pct(behind, 0.99), 3),
        # the machine is shared: the 1-minute load average at the end of the level
        "load1": round(os.getloadavg()[0], 2),
    }


def _live_waves(scores: list[Any], rate: int) -> list[np.ndarray]:
    """Each bench stream plays catalogued works back to back (aligned to the window grid,
    which the untrained encoder needs to recognise them)."""
    seg = 6 * HOP_FRAMES * 10_240 * rate // 22_050
    parts = [render(s, Version(gain=0.4, noise=0.002, seed=i), rate, seg / rate) for i, s in enumerate(scores)]
    return [np.concatenate(parts[i:] + parts[:i]) for i in range(min(4, len(parts)))]


def bench(args: argparse.Namespace) -> None:
    from consumers.broker import KafkaBroker
    from streamcover.model.loading import load_encoder, resolve_model_path

    base = get_settings()
    encoder, trained = load_encoder(base, allow_untrained=True)
    print(f"model: {'shipped ' + str(resolve_model_path(base)) if trained else 'UNTRAINED (no shipped model)'} "
          f"id={encoder.model_id}")
    work = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    with KafkaBroker(heap="1g") as broker:
        tag = f"bench-{int(time.time())}"
        kafka = broker.client_settings(audio_topic=f"{tag}.audio", match_topic=f"{tag}.matches",
                                       dead_letter_topic=f"{tag}.dlq", state_topic=f"{tag}.state",
                                       group_id=f"{tag}-g", transactional_id_prefix=tag,
                                       audio_partitions=6)
        from consumers.kafka import ensure_topics

        asyncio.run(ensure_topics(kafka))  # before any client could auto-create one
        match = base.match if trained else base.match.model_copy(update=UNTRAINED_MATCH)
        match = match.model_copy(update={"update_min_delta": 0.0, "update_min_span_s": 0.0})
        settings = base.model_copy(update={"kafka": kafka, "match": match,
                                           "catalog": base.catalog.model_copy(update={"path": work / "catalog"})})
        rate = settings.audio.wire_sample_rate
        scores = [make_score(500 + i, 70.0, title=f"Bench {i}") for i in range(args.works)]
        t = time.monotonic()
        build_catalog(settings.catalog.path, encoder, {f"w{i}": (s, "bench") for i, s in enumerate(scores)},
                      settings, rate)
        print(f"catalog: {args.works} works built in {time.monotonic() - t:.0f} s")
        waves = _live_waves(scores[:6], rate)
        env = {**os.environ, "STREAMCOVER_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
               "STREAMCOVER_CATALOG__PATH": str(settings.catalog.path), "STREAMCOVER_LOG_LEVEL": "info",
               "STREAMCOVER_MONITOR__METRICS_PORT": "0"}
        if args.threads is not None:
            env["STREAMCOVER_MONITOR__TORCH_THREADS"] = str(args.threads)
        for key in ("audio_topic", "match_topic", "dead_letter_topic", "state_topic", "group_id",
                    "transactional_id_prefix", "audio_partitions"):
            env[f"STREAMCOVER_KAFKA__{key.upper()}"] = str(getattr(kafka, key))
        for key, value in match.model_dump().items():
            env[f"STREAMCOVER_MATCH__{key.upper()}"] = str(value)
        if not trained:
            ck = work / "untrained.pt"
            from streamcover.model.checkpoint import save_checkpoint

            save_checkpoint(ck, encoder.model, encoder.cfg, encoder.model_id, None)
            env["STREAMCOVER_ENCODER__MODEL_PATH"] = str(ck)
        log = open(work / "monitor.log", "wb")  # noqa: SIM115
        mon = subprocess.Popen([sys.executable, "-m", "consumers", "monitor"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(args.warmup)
            # Warm-up level, not reported: first-batch costs (TorchScript, allocators, joins).
            print("warm-up:", json.dumps(asyncio.run(_level(settings, 2, 25.0, waves))), flush=True)
            results = []
            for n in [int(x) for x in args.streams.split(",")]:
                r = asyncio.run(_level(settings, n, args.seconds, waves))
                r["sustained"] = bool(r["events"]) and r["p99_s"] <= args.p99_target
                results.append(r)
                print(json.dumps(r), flush=True)
                if not r["sustained"] and not args.keep_going:
                    break
        finally:
            mon.terminate()
            mon.wait(60)
        ok = [r["streams"] for r in results if r["sustained"]]
        print(f"sustained: {max(ok) if ok else 0} concurrent real-time live streams "
              f"(p99 window-close→event ≤ {args.p99_target} s); monitor log {work / 'monitor.log'}")


def calibrate(args: argparse.Namespace) -> None:
    """Score distributions of covers vs unrelated works and the false alarms they imply."""
    from streamcover.audio.chunking import chunk_features
    from streamcover.audio.frontend import make_frontend
    from streamcover.audio.resample import StreamResampler
    from streamcover.catalog.search import TwoStageSearcher
    from streamcover.model.loading import load_encoder

    base = get_settings()
    encoder, trained = load_encoder(base, allow_untrained=True)
    print(f"model: {'shipped' if trained else 'UNTRAINED'} id={encoder.model_id}")
    work = Path(tempfile.mkdtemp(prefix="bench-calib-"))
    settings = base.model_copy(update={"catalog": base.catalog.model_copy(update={"path": work / "catalog"})})
    rate = settings.audio.wire_sample_rate
    n = args.works
    scores = [make_score(700 + i, 60.0, title=f"Cal {i}") for i in range(2 * n)]
    build_catalog(settings.catalog.path, encoder, {f"w{i}": (s, "cal") for i, s in enumerate(scores[:n])},
                  settings, rate)
    searcher = TwoStageSearcher.open(settings.catalog.path, settings.catalog)
    fe = make_frontend(settings.frontend)

    def query_scores(wave: np.ndarray, ref: str | None) -> list[tuple[float, float]]:
        up = StreamResampler(rate, fe.sample_rate).push(wave)
        chunks, starts = chunk_features(fe.features(up), fe.frames_per_second)
        vecs = encoder.embed_chunks(chunks)
        out = []
        for m in range(1, min(len(vecs), settings.match.horizon_chunks) + 1):
            hits = searcher.search(vecs[:m], starts[:m])
            own = next((h.score for h in hits if h.reference_id == ref), 0.0)
            other = max((h.score for h in hits if h.reference_id != ref), default=0.0)
            out.append((own, other))
        return out

    covers: list[float] = []
    unrelated: list[float] = []
    for i in range(n):
        v = Version(transpose=int(np.random.default_rng(i).integers(-3, 4)), tempo=1.0 + 0.04 * ((i % 5) - 2),
                    timbre=1 + i % 3, gain=0.4, noise=0.003, seed=i)
        for own, other in query_scores(render(scores[i], v, rate), f"w{i}"):
            covers.append(own)
            unrelated.append(other)
        for _own, other in query_scores(render(scores[n + i], Version(timbre=i % 4, gain=0.4), rate), None):
            unrelated.append(other)
    covers_a, unrel_a = np.array(covers), np.array(unrelated)
    print(f"covers: n={len(covers_a)} median={np.median(covers_a):.4f} p5={np.percentile(covers_a, 5):.4f}")
    print(f"unrelated (best wrong reference per query): n={len(unrel_a)} median={np.median(unrel_a):.4f} "
          f"p99={np.percentile(unrel_a, 99):.4f} max={unrel_a.max():.4f}")
    print("threshold  recall  P(false alarm/decision)  false alarms per stream-hour (360 decisions)")
    lo, hi = float(min(covers_a.min(), unrel_a.min())), float(max(covers_a.max(), unrel_a.max()))
    for th in np.linspace(lo, hi, 12):
        fa = float((unrel_a >= th).mean())
        print(f"{th:9.4f}  {float((covers_a >= th).mean()):6.3f}  {fa:22.4f}  {360 * fa:10.2f}")
    print(f"current settings: threshold={base.match.threshold} "
          f"-> recall {(covers_a >= base.match.threshold).mean():.3f}, "
          f"false alarms/stream-hour {360 * (unrel_a >= base.match.threshold).mean():.2f} "
          f"(resolution: 1/{len(unrel_a)} per decision)")
    print(f"medians: covers {statistics.median(covers):.4f}, unrelated {statistics.median(unrelated):.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", default="10,20,40,80,200", help="stream counts to try, in order")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds per level")
    p.add_argument("--works", type=int, default=12, help="catalogued works")
    p.add_argument("--threads", type=int, default=None,
                   help="the monitor's torch threads (monitor.torch_threads; default: the service's "
                        "default, 1; 0: encoder.threads)")
    p.add_argument("--warmup", type=float, default=25.0, help="seconds for the monitor to start")
    p.add_argument("--p99-target", type=float, default=1.0)
    p.add_argument("--keep-going", action="store_true", help="try every level even after a failure")
    p.add_argument("--calibrate", action="store_true", help="score distributions and false-alarm rates")
    args = p.parse_args()
    if args.calibrate:
        calibrate(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
