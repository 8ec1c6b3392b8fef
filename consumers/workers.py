"""`streamcover monitor --workers N`: N monitor processes of one consumer group on one host.

Why processes: the monitor is CPU-bound in one Python process (front end, encoder, GIL);
N processes use N cores. Each worker is a full `streamcover monitor` with its own instance
id (``<instance id>-w<i>``) and metrics port (``metrics_port + i``, or any free port when
the port is 0), so each is its own consumer-group member; transactional ids belong to the
input partitions (docs/monitor.md "Fencing"), so workers need nothing else to be fenced.

The supervisor forwards SIGTERM/SIGINT to every worker and waits for them (each drains and
commits), restarts a worker that dies (exponential backoff, reset after a minute of
uptime), and stops everything when a worker exits 78 (EX_CONFIG: a duplicate instance id,
or no encoder weights; restarting would not help). Its exit status: 0 after a signal when
every worker exited 0, 78 for a configuration error, else the first non-zero worker status.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from consumers.exit_codes import EXIT_DUPLICATE
from streamcover.log import get_logger

log = get_logger(__name__)


@dataclass
class Worker:
    """One supervised process and its restart bookkeeping."""

    name: str
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay: float = 1.0
    due: float = 0.0
    codes: list[int] = field(default_factory=list)


def worker_commands(args: argparse.Namespace, instance_id: str, metrics_port: int, n: int) -> list[list[str]]:
    """The ``streamcover monitor`` command line of each of ``n`` workers."""
    base = [sys.executable, "-m", "consumers"]
    if getattr(args, "log_format", None):
        base += ["--log-format", args.log_format]
    commands = []
    for i in range(n):
        cmd = [*base, "monitor", "--instance-id", f"{instance_id}-w{i}",
               "--metrics-port", str(metrics_port + i if metrics_port else 0)]
        if getattr(args, "catalog", None):
            cmd += ["--catalog", str(args.catalog)]
        commands.append(cmd)
    return commands


class Supervisor:
    """Runs ``commands`` as workers until a signal (see module docstring)."""

    def __init__(self, commands: Sequence[Sequence[str]], *, max_delay: float = 30.0,
                 healthy_after: float = 60.0, stop_grace: float = 60.0) -> None:
        self.workers = [Worker(f"w{i}", list(c)) for i, c in enumerate(commands)]
        self.max_delay = max_delay
        self.healthy_after = healthy_after
        self.stop_grace = stop_grace
        self.stopping = False
        self.status = 0

    def _spawn(self, w: Worker) -> None:
        w.proc = subprocess.Popen(w.command, env=os.environ.copy())
        w.started_at = time.monotonic()
        log.info("worker_started", worker=w.name, pid=w.proc.pid, restarts=w.restarts)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _forward(self, signum: int) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signum)

    def step(self, now: float) -> None:
        """Reap dead workers and (re)start due ones: one pass of the loop."""
        for w in self.workers:
            if w.proc is not None:
                code = w.proc.poll()
                if code is None:
                    continue
                w.proc = None
                w.codes.append(code)
                if self.stopping:
                    continue
                if code == EXIT_DUPLICATE:
                    log.error("worker_duplicate_instance", worker=w.name)
                    self.status = EXIT_DUPLICATE
                    self.stopping = True
                    continue
                if now - w.started_at > self.healthy_after:
                    w.delay = 1.0
                w.due = now + w.delay
                log.warning("worker_exited", worker=w.name, code=code, restart_in_s=w.delay)
                w.delay = min(self.max_delay, w.delay * 2)
                w.restarts += 1
            if w.proc is None and not self.stopping and now >= w.due:
                self._spawn(w)

    def run(self, poll_s: float = 0.2) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self.stopping:
                self.step(time.monotonic())
                time.sleep(poll_s)
            self._forward(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_grace
            for w in self.workers:
                if w.proc is None:
                    continue
                try:
                    w.codes.append(w.proc.wait(max(0.1, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    log.error("worker_killed", worker=w.name, after_s=self.stop_grace)
                    w.proc.kill()
                    w.codes.append(w.proc.wait())
                w.proc = None
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        if self.status:
            return self.status
        last = [w.codes[-1] for w in self.workers if w.codes]
        return next((c for c in last if c != 0), 0)


def main(args: argparse.Namespace) -> int:
    """``streamcover monitor --workers N`` (N ≥ 2; one worker is the plain monitor)."""
    from streamcover.config import get_settings

    settings = get_settings()
    instance = getattr(args, "instance_id", None) or settings.monitor.instance_id
    port = getattr(args, "metrics_port", None)
    port = settings.monitor.metrics_port if port is None else port
    commands = worker_commands(args, instance, port, args.workers)
    log.info("supervisor_started", workers=len(commands), instance_id=instance)
    code = Supervisor(commands).run()
    log.info("supervisor_stopped", code=code)
    return code
