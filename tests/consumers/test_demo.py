"""`streamcover demo` end to end — the README's first command, with the shipped model: its own
broker, catalog and monitor; it exits 0 only if the cover is found as its work, the unrelated
upload stays silent and the live set list names its three works in order."""

from __future__ import annotations

import subprocess
import sys

from streamcover.config import PROJECT_ROOT


def test_the_demo_keeps_its_promises() -> None:
    proc = subprocess.run([sys.executable, "-m", "consumers", "demo", "--speed", "4"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "shipped model" in out and "MATCH: Seven Bridges" in out and "done in" in out
