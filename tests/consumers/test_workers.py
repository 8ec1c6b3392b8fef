"""The `monitor --workers N` supervisor with real child processes (no broker needed)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from consumers.workers import EXIT_DUPLICATE, Supervisor, worker_commands


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _run_steps(sup: Supervisor, seconds: float, until: object = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sup.step(time.monotonic())
        if callable(until) and until():
            return
        time.sleep(0.05)


def test_a_dead_worker_is_restarted_with_growing_backoff() -> None:
    sup = Supervisor([_py("import time; time.sleep(60)"), _py("raise SystemExit(3)")], max_delay=0.4)
    try:
        _run_steps(sup, 20, lambda: sup.workers[1].restarts >= 3)
        steady, crashing = sup.workers
        assert crashing.restarts >= 3 and crashing.codes[:3] == [3, 3, 3]
        assert crashing.delay == 0.4  # 1.0 would exceed the cap: capped from the first doubling
        assert steady.restarts == 0 and steady.proc is not None and steady.proc.poll() is None
        assert not sup.stopping
    finally:
        sup.stopping = True
        sup._forward(15)
        for w in sup.workers:
            if w.proc is not None:
                w.proc.wait(10)


def test_a_duplicate_instance_id_stops_the_supervisor() -> None:
    sup = Supervisor([_py("import time; time.sleep(60)"), _py(f"raise SystemExit({EXIT_DUPLICATE})")])
    _run_steps(sup, 20, lambda: sup.stopping)
    assert sup.stopping and sup.status == EXIT_DUPLICATE
    assert sup.workers[1].restarts == 0
    sup._forward(15)
    assert sup.workers[0].proc is not None and sup.workers[0].proc.wait(10) == -15


def test_worker_commands_give_each_worker_its_identity(tmp_path: Path) -> None:
    args = argparse.Namespace(log_format="json", catalog=tmp_path)
    cmds = worker_commands(args, "east", 9464, 3)
    assert [c[c.index("--instance-id") + 1] for c in cmds] == ["east-w0", "east-w1", "east-w2"]
    assert [c[c.index("--metrics-port") + 1] for c in cmds] == ["9464", "9465", "9466"]
    assert all(c[c.index("--catalog") + 1] == str(tmp_path) for c in cmds)
    assert worker_commands(args, "x", 0, 2)[1][-3] == "0"  # port 0: each picks a free one
