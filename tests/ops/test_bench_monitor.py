"""ops/bench/bench_monitor.py and bench_shards.py: the arithmetic of their reports, on
made-up inputs (the benchmarks themselves need a broker and minutes of real time)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "ops" / "bench"))

import bench_monitor  # noqa: E402  (ops/bench/bench_monitor.py)
import bench_shards  # noqa: E402


def _snap(pid: int, stages: dict[str, float], threads: dict[str, float],
          batches: list[list[float]]) -> dict[str, Any]:
    return {"pid": pid, "stages": {k: {"cpu_s": v, "wall_s": v, "calls": 1} for k, v in stages.items()},
            "threads": {k: {"cpu_s": v, "runq_s": 0.0} for k, v in threads.items()}, "batches": batches}


def test_profile_level_differences_and_shares() -> None:
    before = {1: _snap(1, {"hpcp": 1.0, "encoder": 0.5}, {"MainThread": 2.0, "asyncio_0": 1.0}, [])}
    # 10 s level, 20 streams: hpcp +4 s, encoder +1 s, a second worker appears with 1 s of stage 1
    batches = [[105.0, 10, 2, 0.1, 0.5, 0.3, 0.1, 0.3], [106.0, 30, 0, 0.3, 0.5, 0.3, 0.0, 0.3],
               [50.0, 1, 0, 9.0, 9.0, 9.0, 0.0, 9.0]]  # the last one is before the level
    after = {1: _snap(1, {"hpcp": 5.0, "encoder": 1.5}, {"MainThread": 4.0, "asyncio_0": 6.0}, batches),
             2: _snap(2, {"stage1": 1.0}, {"asyncio_3": 1.0}, [])}
    r = bench_monitor._profile_level(before, after, 100.0, 110.0, 20 * 10.0)
    assert list(r["stages"]) == ["hpcp", "encoder", "stage1"]  # pipeline order
    assert r["stages"]["hpcp"] == {"cores": 0.4, "ms_per_stream_s": 20.0, "share": round(4 / 6, 3)}
    assert r["pipeline_cpu_cores"] == 0.6
    assert r["threads_cores"] == {"pipeline thread (asyncio_*)": 0.6, "MainThread": 0.2}
    assert r["batches"] == 2 and r["pipeline_busy"] == 0.1
    # 1.0 s inside process: 0.6 on a CPU, 0.1 waiting for one, 0.3 for the GIL
    assert r["pipeline_gil_wait_share"] == 0.3 and r["pipeline_runq_share"] == 0.1
    assert r["queue_age_p99_s"] == 0.3


def test_py_spy_summary(tmp_path: Path) -> None:
    raw = tmp_path / "spy.txt"
    raw.write_text(
        "thread (10): MainThread;run (asyncio/base_events.py:1) ;send (aiokafka/producer.py:3) 30\n"
        "thread (10): MainThread;commit (partition_producers.py:8);encode (events.py:395) 10\n"
        "thread (11): asyncio_0;process (pipeline.py:1);push_many (frontend.py:2) 50\n"
    )
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    r = bench_monitor._py_spy_summary([(done, raw)], seconds=1.0, rate=100)
    assert r["gil_held_share"] == 0.9
    assert r["gil_by_thread"] == {"pipeline thread (asyncio_*)": 0.5, "MainThread": 0.4}
    assert r["event_loop_gil_by_part"] == {"kafka (aiokafka)": 0.3, "msgpack + pydantic (events)": 0.1}


def test_process_tree_cpu_and_rss() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        tree = bench_monitor._tree(os.getpid())
        assert os.getpid() in tree and child.pid in tree
        assert bench_monitor._cpu_s([os.getpid()]) > 0
        rss, hwm = bench_monitor._rss_mib([os.getpid()])
        assert 0 < rss <= hwm
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("ref, work", [("w0000123-v1", 123), ("w0000000-v1003", 0)])
def test_shard_bench_work_of_reference(ref: str, work: int) -> None:
    assert bench_shards._work(ref) == work
    assert bench_shards.shard_of(ref, 2) in (0, 1)
