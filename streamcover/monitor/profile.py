"""Per-stage CPU profile of the monitor process, for ``ops/bench/bench_monitor.py --profile``.

Off unless ``STREAMCOVER_MONITOR_PROFILE`` names a directory (it is not a setting: it is a
measuring hook, not behaviour). Switched off, every hook is one attribute test.

Switched on, the pipeline's stages (decode, resample, HPCP, windowing, encoder, stage 1,
stage 2, stage 3, the rest of the search, decision, checkpoint) are timed in the pipeline
thread with ``time.thread_time_ns`` (this thread's CPU) and ``perf_counter_ns`` (wall);
each stage's figure is *exclusive* (a stage nested in another is not counted twice), so the
stages of one batch add up to the CPU of ``Pipeline.process``. Per batch it also keeps the
number of records, the age of its oldest record when the batch starts (queueing before
the pipeline), and the pipeline thread's wall, CPU and run-queue wait (from
``/proc/thread-self/schedstat``): wall − CPU − run-queue wait is time the thread was
runnable in Python's eyes but not scheduled by it, which in a thread that does no I/O is
waiting for the GIL. Every ``interval_s`` (and at exit) it writes
``stages-<pid>.json``: cumulative totals, every thread's CPU (``schedstat``, by Python
thread name where there is one: ``MainThread`` is the event loop, i.e. Kafka I/O and the
events' msgpack), the process's peak RSS and the recent batches.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV = "STREAMCOVER_MONITOR_PROFILE"


def _schedstat(path: str) -> tuple[int, int]:
    """(ns on CPU, ns waiting on a run queue) of a thread, or (0, 0) if unreadable."""
    try:
        with open(path) as f:
            run, wait, _ = f.read().split()
        return int(run), int(wait)
    except (OSError, ValueError):
        return 0, 0


class _Stage:
    __slots__ = ("cpu0", "name", "profile", "sub_cpu", "sub_wall", "wall0")

    def __init__(self, profile: StageProfile, name: str) -> None:
        self.profile = profile
        self.name = name

    def __enter__(self) -> None:
        self.sub_cpu = self.sub_wall = 0
        self.profile._stack.append(self)
        self.wall0 = time.perf_counter_ns()
        self.cpu0 = time.thread_time_ns()

    def __exit__(self, *exc: object) -> None:
        cpu = time.thread_time_ns() - self.cpu0
        wall = time.perf_counter_ns() - self.wall0
        p = self.profile
        p._stack.pop()
        tot = p.stages.setdefault(self.name, [0, 0, 0])
        tot[0] += cpu - self.sub_cpu
        tot[1] += wall - self.sub_wall
        tot[2] += 1
        if p._stack:
            parent = p._stack[-1]
            parent.sub_cpu += cpu
            parent.sub_wall += wall


class _Off:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_OFF = _Off()


class StageProfile:
    """Stage timers of one monitor process (see module docstring)."""

    def __init__(self, directory: Path | None = None, interval_s: float = 2.0,
                 keep_batches: int = 4_000) -> None:
        self.enabled = directory is not None
        self.directory = directory
        self.interval_s = interval_s
        # name -> [exclusive thread CPU ns, exclusive wall ns, calls]
        self.stages: dict[str, list[int]] = {}
        self.batches: deque[list[float]] = deque(maxlen=keep_batches)
        self._stack: list[_Stage] = []
        self._batch: tuple[float, int, float, int, int, int, int] | None = None
        self._last_dump = time.monotonic()
        self.started_at = time.time()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            atexit.register(self.dump)

    @classmethod
    def from_env(cls) -> StageProfile:
        d = os.environ.get(ENV)
        return cls(Path(d)) if d else cls()

    def stage(self, name: str) -> _Stage | _Off:
        """A context manager timing ``name`` (a no-op when the profile is off)."""
        return _Stage(self, name) if self.enabled else _OFF

    # ---- batches -----------------------------------------------------------------------------
    def batch_start(self, records: int, oldest_ts_ms: float | None) -> None:
        if not self.enabled:
            return
        now = time.time()
        age = now - oldest_ts_ms / 1000.0 if oldest_ts_ms else float("nan")
        run, wait = _schedstat("/proc/thread-self/schedstat")
        self._batch = (now, records, age, time.perf_counter_ns(), time.thread_time_ns(), run, wait)

    def batch_end(self, windows: int) -> None:
        if not self.enabled or self._batch is None:
            return
        t, n, age, wall0, cpu0, run0, wait0 = self._batch
        self._batch = None
        run, wait = _schedstat("/proc/thread-self/schedstat")
        wall = (time.perf_counter_ns() - wall0) / 1e9
        cpu = (time.thread_time_ns() - cpu0) / 1e9
        runq = (wait - wait0) / 1e9
        # [time, records, windows, oldest record age, wall, cpu, run-queue wait, on-CPU (schedstat)]
        self.batches.append([round(t, 3), n, windows, round(age, 4), round(wall, 5), round(cpu, 5),
                             round(runq, 5), round((run - run0) / 1e9, 5)])
        if time.monotonic() - self._last_dump >= self.interval_s:
            self.dump()

    # ---- wrapping objects we do not own (the searcher's stages) -----------------------------
    def wrap(self, obj: Any, method: str, name: str) -> None:
        """Time ``obj.method`` as stage ``name`` (an instance attribute shadows the method)."""
        if not self.enabled or obj is None or not callable(getattr(obj, method, None)):
            return
        inner: Callable[..., Any] = getattr(obj, method)
        inner = getattr(inner, "__profiled__", inner)  # wrapped before: wrap the original

        def timed(*args: Any, **kwargs: Any) -> Any:
            with _Stage(self, name):
                return inner(*args, **kwargs)

        timed.__profiled__ = inner  # type: ignore[attr-defined]
        setattr(obj, method, timed)

    def instrument_searcher(self, searcher: Any) -> None:
        """Stage 1 (candidates), stage 2 (rerank, align) and stage 3 (the verifier)."""
        self.wrap(searcher, "candidates", "stage1")
        self.wrap(searcher, "rerank", "stage2")
        self.wrap(searcher, "align", "stage2")
        self.wrap(getattr(searcher, "verifier", None), "verify", "stage3")

    # ---- output ------------------------------------------------------------------------------
    def threads(self) -> dict[str, dict[str, float]]:
        """CPU and run-queue wait (s) of every thread of this process, by name."""
        names = {t.native_id: t.name for t in threading.enumerate()}
        out: dict[str, dict[str, float]] = {}
        try:
            tids = os.listdir("/proc/self/task")
        except OSError:
            return out
        for tid in tids:
            run, wait = _schedstat(f"/proc/self/task/{tid}/schedstat")
            name = names.get(int(tid))
            if name is None:
                try:
                    with open(f"/proc/self/task/{tid}/comm") as f:
                        name = f.read().strip()
                except OSError:
                    name = "?"
            key = name if name not in out else f"{name}#{tid}"
            out[key] = {"cpu_s": round(run / 1e9, 4), "runq_s": round(wait / 1e9, 4)}
        return out

    def snapshot(self) -> dict[str, Any]:
        t = os.times()
        return {
            "pid": os.getpid(), "time": time.time(), "started_at": self.started_at,
            "process_cpu_s": round(t.user + t.system, 4),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "stages": {k: {"cpu_s": v[0] / 1e9, "wall_s": v[1] / 1e9, "calls": v[2]}
                       for k, v in self.stages.items()},
            "threads": self.threads(),
            "batch_fields": ["time", "records", "windows", "oldest_age_s", "wall_s", "cpu_s",
                             "runq_s", "oncpu_s"],
            "batches": list(self.batches),
        }

    def dump(self) -> None:
        if self.directory is None:
            return
        self._last_dump = time.monotonic()
        path = self.directory / f"stages-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.snapshot()))
            os.replace(tmp, path)
        except OSError:
            pass
