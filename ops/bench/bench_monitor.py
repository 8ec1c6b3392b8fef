"""Benchmark: concurrent real-time streams through the real broker, and threshold calibration.

One script (a benchmark, run by hand, never imported): its levels, profile and calibration
share the broker and catalog set-up, which is why it runs past ~450 lines.

Throughput/latency (default): starts a local broker, builds a catalog of synthetic works
with the encoder the monitor would use (the shipped model if present, else the untrained
one: printed), runs ``streamcover monitor`` (``--workers N``: N processes of one consumer
group) as its own process, then sends N streams in real time (0.5 s frames) for each N of
``--streams``; each stream ends (eos) after its last frame. ``--source live`` (default) sends
live streams, which never use stage 3; ``--source upload`` sends uploads at the same pace,
whose windows are aligned by stage 3 when ``verify.enabled`` (set
``STREAMCOVER_VERIFY__ENABLED=false`` for the same run without it). Every window of every
stream emits an update event (update thresholds set to 0), so the latency from window close
(the producer's send time of the frame that completes the window) to the event being
visible to a read_committed consumer is measured for every window. It is split into the
part inside the monitor (window close → event built: queueing before the pipeline and the
pipeline's work, ``monitor_p99_s``) and the part after it (transaction commit and delivery,
``commit_p99_s``). A level is "sustained" when the p99 latency stays ≤ ``--p99-target``.
By default every stream starts at once and sends its frames in the same instant of each
0.5 s tick, so every window of every stream closes in the same frame and the monitor embeds
and searches them as one burst (the worst case: a latency limit, reached well below the CPU
limit). ``--stagger 10.2`` spreads the starts over one hop and each tick's frames over the
tick (10 groups, 50 ms apart), as streams that start and send independently do.

Each level also prints the CPU (cores) used by the monitor processes, the broker and the
bench itself (producer and consumer) — they share the machine — and by everything else on
the machine (``others``: a level measured while ``others`` is well above 0 measures the
sharing, not the monitor) and the vCPU time the hypervisor took (``steal``), the monitor's
RSS and peak RSS (``VmHWM``, summed over workers) and the 1-minute load average at its end
(``load1``).

``--profile``: the monitor records per-stage CPU (``streamcover.monitor.profile``; off by
default, no behaviour changes) and each level prints a stage table: CPU per stage in cores
and in ms per stream-second, every thread's CPU (``MainThread`` is the event loop: Kafka
I/O and the events' msgpack), the pipeline thread's busy share and GIL wait, and the
queueing before it (age of a batch's oldest record). ``--py-spy BIN`` also samples the GIL
holder of each monitor process for part of each level (``py-spy record --gil``) and prints
who holds the GIL and what the event loop does with it.

The monitor runs with the service's default torch threads (``monitor.torch_threads`` = 1)
unless ``--threads``.

Calibration (``--calibrate``): MaxMean scores of covers (transposed, faster, other timbre)
and of unrelated works against the catalog, per 20 s window query of 1..6 chunks, and the
false-alarm rate per stream-hour each threshold implies (one decision per 10 s hop:
360 per hour; rate = 360 · P(unrelated score ≥ threshold)).

    nice -n 10 .venv/bin/python ops/bench/bench_monitor.py --streams 10,20,40 --seconds 60
    nice -n 10 .venv/bin/python ops/bench/bench_monitor.py --stagger 10.2 --streams 360,400 --profile
    nice -n 10 .venv/bin/python ops/bench/bench_monitor.py --stagger 10.2 --streams 600 --workers 2
    STREAMCOVER_VERIFY__ENABLED=false .venv/bin/python ops/bench/bench_monitor.py --stagger 10.2 \
        --source upload --streams 260
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
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from consumers.demo import UNTRAINED_MATCH, build_catalog  # noqa: E402
from consumers.media import Version, make_score, render  # noqa: E402
from streamcover.config import Settings, get_settings  # noqa: E402

HOP_FRAMES = 22
SLOTS = 10  # with --stagger, a tick's frames go out in 10 groups 50 ms apart
PROFILE_ENV = "STREAMCOVER_MONITOR_PROFILE"  # streamcover.monitor.profile.ENV (not imported:
# the bench also runs against older checkouts that lack it)
# The profile's stages, in pipeline order, and the table's names for them.
STAGES = {"decode": "decode (msgpack + checks + int16→float)", "resample": "resample",
          "hpcp": "HPCP (batched front end)", "windowing": "windowing + normalise",
          "encoder": "encoder", "stage1": "stage 1 (HNSW + memo)", "stage2": "stage 2 (MaxMean rerank)",
          "stage3": "stage 3 (alignment)", "search_other": "search (rest)", "decision": "decision + event",
          "checkpoint": "checkpoint (state msgpack)", "pipeline_other": "pipeline (rest: sequencer, routing)"}


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


# ---- processes: CPU and memory from /proc ---------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(pid: int | None) -> list[int]:
    """``pid`` and its descendants."""
    if pid is None:
        return []
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _cpu_s(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            pass
    return total


def _machine_cpu_s() -> tuple[float, float]:
    """CPU seconds the whole machine has spent busy (``/proc/stat``: all processes) and
    stolen by the hypervisor (a VM's vCPU not running while it had work)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    return sum(v[i] for i in (0, 1, 2, 5, 6)) / tick, v[7] / tick  # user nice system irq softirq; steal


def _rss_mib(pids: list[int]) -> tuple[float, float]:
    """(VmRSS, VmHWM) summed over ``pids``, MiB."""
    rss = hwm = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) / 1024
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1]) / 1024
        except (OSError, ValueError):
            pass
    return round(rss, 1), round(hwm, 1)


def _monitor_pids(mon: subprocess.Popen[bytes]) -> list[int]:
    """The monitor processes doing the work (the workers, not their supervisor)."""
    tree = _tree(mon.pid)
    workers = [p for p in tree if p != mon.pid]
    return workers or [mon.pid]


# ---- the stage profile ----------------------------------------------------------------------
def _read_profiles(directory: Path | None) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    if directory is None:
        return out
    for f in directory.glob("stages-*.json"):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        out[int(d["pid"])] = d
    return out


def _profile_level(before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]],
                   t0: float, t1: float, stream_seconds: float) -> dict[str, Any]:
    """Stage CPU, thread CPU, GIL wait and queueing between two profile snapshots
    (``stream_seconds``: the audio the level sent, streams × seconds)."""
    span = max(1e-9, t1 - t0)
    stages: dict[str, float] = {}
    threads: dict[str, float] = {}
    batches: list[list[float]] = []
    for pid, a in after.items():
        b = before.get(pid, {"stages": {}, "threads": {}})
        for k, v in a["stages"].items():
            stages[k] = stages.get(k, 0.0) + v["cpu_s"] - b["stages"].get(k, {}).get("cpu_s", 0.0)
        for k, v in a["threads"].items():
            name = k.split("#")[0]
            name = "pipeline thread (asyncio_*)" if name.startswith("asyncio_") else name
            threads[name] = threads.get(name, 0.0) + v["cpu_s"] - b["threads"].get(k, {}).get("cpu_s", 0.0)
        batches += [x for x in a["batches"] if t0 <= x[0] <= t1]
    total = sum(stages.values())
    per_stream_s = max(1e-9, stream_seconds)
    table = {k: {"cores": round(v / span, 3), "ms_per_stream_s": round(1e3 * v / per_stream_s, 3),
                 "share": round(v / total, 3) if total else 0.0} for k, v in stages.items()}
    wall = sum(x[4] for x in batches)
    oncpu = sum(x[7] for x in batches)
    runq = sum(x[6] for x in batches)
    ages = [x[3] for x in batches if x[3] == x[3]]
    return {
        "stages": dict(sorted(table.items(), key=lambda kv: list(STAGES).index(kv[0])
                              if kv[0] in STAGES else 99)),
        "pipeline_cpu_cores": round(total / span, 3),
        "threads_cores": {k: round(v / span, 3) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])
                          if v / span >= 0.005},
        # share of the level the pipeline thread was inside Pipeline.process, summed over workers
        "pipeline_busy": round(wall / span, 3),
        "pipeline_oncpu_share": round(oncpu / wall, 3) if wall else None,
        "pipeline_runq_share": round(runq / wall, 3) if wall else None,
        # in Pipeline.process, neither on a CPU nor waiting for one: waiting for the GIL
        "pipeline_gil_wait_share": round(max(0.0, wall - oncpu - runq) / wall, 3) if wall else None,
        "batches": len(batches),
        "records_per_batch_p50": _pct([x[1] for x in batches], 0.5),
        "batch_wall_p50_s": round(_pct([x[4] for x in batches], 0.5), 4),
        "batch_wall_p99_s": round(_pct([x[4] for x in batches], 0.99), 4),
        "queue_age_p50_s": round(_pct(ages, 0.5), 3), "queue_age_p99_s": round(_pct(ages, 0.99), 3),
    }


# ---- py-spy: who holds the GIL ---------------------------------------------------------------
def _py_spy_start(binary: str, pids: list[int], seconds: float, out: Path) -> list[tuple[subprocess.Popen[bytes], Path]]:
    procs = []
    for p in pids:
        path = out / f"pyspy-{p}-{int(time.time())}.txt"
        cmd = [binary, "record", "--pid", str(p), "-d", str(max(1, int(seconds))), "--gil", "--threads",
               "--nonblocking", "--format", "raw", "-o", str(path)]
        procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
    return procs


def _py_spy_summary(runs: list[tuple[subprocess.Popen[bytes], Path]], seconds: float, rate: int = 100) -> dict[str, Any]:
    """GIL held (share of samples of the run), by thread, and what the event loop holds it for."""
    held: Counter[str] = Counter()
    loop: Counter[str] = Counter()
    ok = 0
    for proc, path in runs:
        try:
            proc.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not path.exists():
            continue
        ok += 1
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            c = int(count)
            thread = stack.split(";", 1)[0].split(": ", 1)[-1]
            thread = "pipeline thread (asyncio_*)" if thread.startswith("asyncio_") else thread
            held[thread] += c
            if thread == "MainThread":
                loop[_loop_category(stack)] += c
    if not ok:
        return {"error": "py-spy gave no samples"}
    possible = ok * seconds * rate
    return {"processes": ok, "gil_held_share": round(sum(held.values()) / possible, 3),
            "gil_by_thread": {k: round(v / possible, 3) for k, v in held.most_common()},
            "event_loop_gil_by_part": {k: round(v / possible, 3) for k, v in loop.most_common()}}


def _loop_category(stack: str) -> str:
    if "msgpack" in stack or ("events" in stack and ("encode" in stack or "decode" in stack)):
        return "msgpack + pydantic (events)"
    if "structlog" in stack or "logging" in stack or "log.py" in stack:
        return "logging"
    if "aiokafka" in stack or "kafka" in stack:
        return "kafka (aiokafka)"
    if "asyncio" in stack or "selectors" in stack:
        return "asyncio"
    return "other"


# ---- one level ------------------------------------------------------------------------------
async def _level(settings: Settings, n: int, seconds: float, waves: list[np.ndarray],
                 source: str = "live", stagger: float = 0.0) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    from consumers.kafka import consumer_kwargs
    from consumers.producer import FramePublisher, kafka_producer
    from streamcover.events import MatchEvent, decode

    rate = settings.audio.wire_sample_rate
    frame = rate // 2
    tag = f"n{n}-{int(time.time())}"
    latencies: list[float] = []
    inside: list[float] = []
    after: list[float] = []
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
                        inside.append(ev.latency_ms / 1000.0)
                        after.append(now - ev.emitted_at)

    col = asyncio.create_task(collect())
    behind: list[float] = []
    async with kafka_producer(settings) as producer:
        pubs = [FramePublisher(producer, settings, f"{tag}-{i}", source, rate) for i in range(n)]  # type: ignore[arg-type]
        hop = HOP_FRAMES * 10_240 * rate // 22_050  # start each stream on the window grid
        offsets = [(i % 5) * hop for i in range(n)]
        # Stream i starts first[i] frames into the level: spread over ``stagger`` seconds,
        # windows close at all phases of the hop, as for streams that start independently;
        # 0: every stream starts together and every window closes in the same frame.
        # With a stagger the frames of a 0.5 s tick also go out in SLOTS groups spread over
        # the tick, not all in the same instant.
        ticks = max(1, int(stagger * 2))
        first = [(i * 7919) % ticks if stagger > 0 else 0 for i in range(n)]
        slots = SLOTS if stagger > 0 else 1
        t0 = time.monotonic()
        steps = int(seconds * 2)
        for step in range((steps + max(first)) * slots):
            k, slot = divmod(step, slots)
            due = t0 + (k + 1) * 0.5 + slot * 0.5 / slots
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            behind.append(time.monotonic() - due)
            ending = []
            for i, pub in enumerate(pubs):
                j = k - first[i]
                if i % slots != slot or not 0 <= j < steps:
                    continue
                w = waves[i % len(waves)]
                a = (offsets[i] + j * frame) % (len(w) - len(w) % frame)
                await pub.push(w[a : a + frame])
                if j == steps - 1:
                    ending.append(pub)
            # each stream ends (eos) right after its last frame
            await asyncio.gather(*(pub.close() for pub in ending))
        await producer.flush()
    await asyncio.sleep(5.0)
    stop.set()
    await col
    await consumer.stop()
    return {
        "streams": n, "source": source, "seconds": seconds, "stagger_s": stagger, "events": len(latencies),
        "p50_s": round(_pct(latencies, 0.5), 3), "p99_s": round(_pct(latencies, 0.99), 3),
        "max_s": round(max(latencies), 3) if latencies else None,
        "monitor_p50_s": round(_pct(inside, 0.5), 3), "monitor_p99_s": round(_pct(inside, 0.99), 3),
        "commit_p50_s": round(_pct(after, 0.5), 3), "commit_p99_s": round(_pct(after, 0.99), 3),
        "producer_behind_p99_s": round(_pct(behind, 0.99), 3),
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
          f"id={encoder.model_id}; code {ROOT}; source {args.source}; workers {args.workers}; "
          f"stage 3 {'on' if base.verify.enabled else 'off'}; {os.cpu_count()} CPUs")
    work = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    with KafkaBroker(heap="1g") as broker:
        tag = f"bench-{int(time.time())}"
        kafka = broker.client_settings(audio_topic=f"{tag}.audio", match_topic=f"{tag}.matches",
                                       dead_letter_topic=f"{tag}.dlq", state_topic=f"{tag}.state",
                                       group_id=f"{tag}-g", transactional_id_prefix=tag,
                                       audio_partitions=args.partitions)
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
        profile_dir = work / "profile" if args.profile else None
        if profile_dir is not None:
            env[PROFILE_ENV] = str(profile_dir)
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
        cmd = [sys.executable, "-m", "consumers", "monitor"]
        if args.workers > 1:
            cmd += ["--workers", str(args.workers)]
        mon = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        broker_pids = _tree(getattr(broker, "pid", None))
        try:
            time.sleep(args.warmup)
            # Warm-up level, not reported: first-batch costs (TorchScript, allocators, joins).
            warm = asyncio.run(_level(settings, 2, 25.0, waves, args.source))
            idle_rss = _rss_mib(_monitor_pids(mon))[0]
            print("warm-up:", json.dumps(warm), f"monitor RSS {idle_rss} MiB", flush=True)
            results = []
            for n in [int(x) for x in args.streams.split(",")]:
                pids = _monitor_pids(mon)
                cpu0 = (_cpu_s(_tree(mon.pid)), _cpu_s(broker_pids), sum(os.times()[:2]), *_machine_cpu_s())
                prof0 = _read_profiles(profile_dir)
                t0, w0 = time.time(), time.monotonic()
                spy = (_py_spy_start(args.py_spy, pids, min(30.0, args.seconds - 15), work)
                       if args.py_spy and args.seconds > 20 else [])
                r = asyncio.run(_level(settings, n, args.seconds, waves, args.source, args.stagger))
                if spy:
                    r["py_spy"] = _py_spy_summary(spy, min(30.0, args.seconds - 15))
                span = time.monotonic() - w0
                cpu1 = (_cpu_s(_tree(mon.pid)), _cpu_s(broker_pids), sum(os.times()[:2]), *_machine_cpu_s())
                cores = {k: round((b - a) / span, 2) for k, a, b in
                         zip(("monitor", "broker", "bench", "machine", "steal"), cpu0, cpu1, strict=True)}
                # what the rest of the (shared) machine used meanwhile: the level is only
                # a capacity figure when this is near 0
                cores["others"] = round(cores["machine"] - cores["monitor"] - cores["broker"] - cores["bench"], 2)
                r["cpu_cores"] = cores
                rss, hwm = _rss_mib(pids)
                r["monitor_rss_mib"], r["monitor_peak_rss_mib"] = rss, hwm
                r["peak_rss_mib_per_100_streams_above_idle"] = round(100 * (hwm - idle_rss) / n, 1)
                r["load1"] = round(os.getloadavg()[0], 2)  # the machine is shared
                if profile_dir is not None:
                    time.sleep(2.5)  # the next profile dump
                    r["profile"] = _profile_level(prof0, _read_profiles(profile_dir), t0, time.time(),
                                                  n * args.seconds)
                r["sustained"] = bool(r["events"]) and r["p99_s"] <= args.p99_target
                results.append(r)
                print(json.dumps(r), flush=True)
                if not r["sustained"] and not args.keep_going:
                    break
        finally:
            mon.terminate()
            mon.wait(60)
        ok = [r["streams"] for r in results if r["sustained"]]
        print(f"sustained: {max(ok) if ok else 0} concurrent real-time {args.source} streams "
              f"(p99 window-close→event ≤ {args.p99_target} s, {args.workers} worker(s)); "
              f"monitor log {work / 'monitor.log'}")


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
    p.add_argument("--source", choices=("live", "upload"), default="live",
                   help="stream kind (uploads use stage 3 when verify.enabled; live never does)")
    p.add_argument("--workers", type=int, default=1, help="monitor processes (streamcover monitor --workers)")
    p.add_argument("--partitions", type=int, default=6, help="audio-topic partitions")
    p.add_argument("--stagger", type=float, default=0.0,
                   help="spread the streams' starts over this many seconds (e.g. 10.2, one hop: "
                        "windows close at every phase of the hop); 0: all start together, so "
                        "every stream's windows close in the same 0.5 s frame (the worst case)")
    p.add_argument("--profile", action="store_true",
                   help="per-stage CPU, threads, GIL wait and queueing of the monitor, per level")
    p.add_argument("--py-spy", default=None, metavar="BIN",
                   help="py-spy binary: sample the GIL holder of each monitor process during each level")
    p.add_argument("--calibrate", action="store_true", help="score distributions and false-alarm rates")
    args = p.parse_args()
    if args.calibrate:
        calibrate(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
